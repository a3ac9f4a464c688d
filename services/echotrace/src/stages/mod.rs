//! The staged deployment: the pipeline cut into processes connected by a Kafka topic, chosen by
//! `stage.role` ([`StageRole`]).
//!
//! - `whole` (the default): one process runs every stage, as `replay` and `demo` do.
//! - `prepare` ([`prepare`]): the stateless stage. It reads `kafka.input_topics` in its own
//!   consumer group, decodes and validates each message (bad ones go to the dead-letter topic),
//!   prepares the post ([`echotrace_core::prepare`]) and embeds it where it may be linked by
//!   meaning, and sends the result to `kafka.prepared_topic` ([`prepared`]): keyed by post id, on
//!   the partition number it was read from, so every input partition's order is kept. It keeps no
//!   state, so it scales with the input's partitions, on GPU nodes for the transformer.
//! - `detect`: linking, cascades, scoring and alerts, the same [`crate::pipeline::Pipeline`] and
//!   checkpoints as `whole`, reading prepared posts from `kafka.prepared_topic` instead of posts,
//!   in one order across input partitions ([`crate::ingest::ordering`]): the `prepare` stage names
//!   each post's input partition and marks the partitions it has read to their end. With
//!   `stage.link_stage` it holds no lexical window: it asks the `link` stage for every batch.
//! - `link` ([`link`]): one linking shard of the lexical window (`stage.link_shard` of
//!   `detector.link_shards`), apart from the `detect` process: probes of every post in, in the
//!   `detect` stage's order, on `kafka.probe_topic`; its answers out on `kafka.answer_topic`
//!   ([`probes`]). The shards hold the window's memory, so it is split over processes.
//! - `score` ([`score`]): one owner of cascades (`stage.score_owner` of
//!   `alerting.cascade_owners`), apart from the `detect` process, which with `stage.score_stage`
//!   routes the scorer's records to the owners' partitions of `kafka.owner_topic` instead of
//!   scoring. An owner makes its cascades' alert events and sends them to `kafka.gate_topic`; a
//!   merge across owners is a handover on the survivor's partition.
//! - `gate` ([`gate`]): the paging gate, one process: every owner's alert events in the order one
//!   scorer makes them, through the circuit breaker, to the alert rows, the alerts topic and
//!   Alertmanager.
//!
//! The `prepare` stage embeds every post that may be linked by meaning. A `whole` process embeds
//! fewer: it skips the posts that something already in its window explains lexically, which only
//! the stateful stage knows. The `detect` stage weighs a post's embedding only where nothing
//! lexical explains it, as `whole` does, so the extra embeddings change no link.

pub mod gate;
pub mod link;
pub mod partition;
pub mod prepare;
pub mod prepared;
pub mod probes;
pub mod score;

use crate::config::{Config, StageRole};
use crate::ingest::lag::Partition;
use chrono::{DateTime, Utc};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::{InvalidPost, Post};
use echotrace_core::prepare::PreparedPost;
use prepared::{InvalidPrepared, PreparedSettings, Received};
use probes::InvalidExchange;
use std::net::SocketAddr;
use std::sync::Arc;

/// A stage process other than a detecting one (`prepare`, `link`, `score`, `gate`) that has
/// started: its probes' address and the handles to wait on.
pub struct Running {
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub api_address: SocketAddr,
    /// The consumer loop; resolves once it has committed and written what it holds.
    pub consumer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The HTTP server task.
    pub server: tokio::task::JoinHandle<()>,
}

/// A consumed message, decoded for the stage that reads it.
#[derive(Debug)]
pub enum Input {
    /// A post as it was posted (`whole`; `detect`, for a message prepared with other settings).
    Post(Post),
    /// A post the `prepare` stage prepared, with its embedding where it may be linked by meaning.
    Prepared(PreparedPost, Option<Arc<TextEmbedding>>),
}

/// Why a consumed message was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidInput {
    /// Not a valid post.
    #[error(transparent)]
    Post(#[from] InvalidPost),
    /// Not a valid prepared post.
    #[error(transparent)]
    Prepared(#[from] InvalidPrepared),
    /// Not a valid message of the exchange with the `link` stage.
    #[error(transparent)]
    Exchange(#[from] InvalidExchange),
}

impl InvalidInput {
    /// A short, stable name for the kind of error (dead-letter headers and metric labels).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidInput::Post(error) => error.kind(),
            InvalidInput::Prepared(error) => error.kind(),
            InvalidInput::Exchange(error) => error.kind(),
        }
    }
}

/// Decodes the messages of the topics a detecting process (`whole` or `detect`) consumes.
#[derive(Debug, Clone)]
pub struct InputDecoder {
    /// `Some` in the `detect` stage: the settings its prepared posts must have been prepared with.
    prepared: Option<PreparedSettings>,
}

/// What [`InputDecoder::decode`] made of a message.
// Decoded and moved on at once, one at a time: boxing the post would allocate for every message
// to save bytes on the rare idle marker.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    /// A post, prepared or not.
    Post {
        /// The post.
        input: Input,
        /// Whether it was prepared with other settings than this process's and is prepared again
        /// here.
        foreign: bool,
        /// The input partition the `prepare` stage read it from (`detect`; `None` for a version 1
        /// message, and in `whole`, where it is the message's own partition).
        source: Option<Partition>,
    },
    /// The `prepare` stage read an input partition to its end at a time (`detect` only).
    Idle {
        /// The input partition.
        source: Partition,
        /// When, by the `prepare` stage's clock.
        at: DateTime<Utc>,
    },
}

impl InputDecoder {
    /// The decoder for `config`'s role.
    pub fn new(config: &Config) -> InputDecoder {
        let prepared = (config.stage.role == StageRole::Detect).then(|| PreparedSettings::of(config));
        InputDecoder { prepared }
    }

    /// The topics this role consumes.
    pub fn topics(config: &Config) -> Vec<String> {
        match config.stage.role {
            StageRole::Detect => vec![config.kafka.prepared_topic.clone()],
            StageRole::Link => vec![config.kafka.probe_topic.clone()],
            StageRole::Score => vec![config.kafka.owner_topic.clone()],
            StageRole::Gate => vec![config.kafka.gate_topic.clone()],
            StageRole::Whole | StageRole::Prepare => config.kafka.input_topics.clone(),
        }
    }

    /// Decodes one message's payload.
    pub fn decode(&self, payload: &[u8]) -> Result<Decoded, InvalidInput> {
        let Some(settings) = &self.prepared else {
            return Ok(Decoded::Post { input: Input::Post(Post::from_json(payload)?), foreign: false, source: None });
        };
        Ok(match prepared::decode(payload, settings)? {
            Received::Prepared(prepared, embedding, source) => {
                Decoded::Post { input: Input::Prepared(prepared, embedding), foreign: false, source }
            }
            Received::Foreign(post, source) => Decoded::Post { input: Input::Post(post), foreign: true, source },
            Received::Idle(source, at) => Decoded::Idle { source, at },
        })
    }
}

impl Input {
    /// The post inside.
    pub fn post(&self) -> &Post {
        match self {
            Input::Post(post) => post,
            Input::Prepared(prepared, _) => &prepared.post,
        }
    }
}
