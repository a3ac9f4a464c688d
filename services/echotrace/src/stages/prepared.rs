//! A prepared post on the wire: the message the `prepare` stage sends the `detect` stage on
//! `kafka.prepared_topic`.
//!
//! JSON, so kcat and any Kafka client can read it: the post as it arrived, what the stateless
//! stage computed from it ([`PreparedPost`]), and its embedding when it may be linked by meaning.
//! The embedding's vectors are little-endian `f32` in base64, exact: the `detect` stage weighs the
//! vectors the `prepare` stage computed, not decimal approximations of them.
//!
//! Every message names the settings it was prepared with ([`PreparedSettings`]). A `detect` stage
//! configured otherwise (a rolling upgrade, a changed model) does not trust the message's
//! fingerprints and embedding: it prepares the post again from its text, links it without an
//! embedding, and counts it (`echotrace_prepared_foreign_total`). Nothing is lost either way.
//!
//! Every post names the input partition it was read from, and the topic also carries **idle
//! markers**: the `prepare` stage read an input partition to its end at a time, and sent everything
//! it read from it before the marker. The `detect` stage orders posts across input partitions by
//! both ([`crate::ingest::ordering`]). Version 1 messages, without the input partition, are still
//! read; their posts are processed as they arrive.

use crate::config::Config;
use crate::embed::Encoder;
use crate::ingest::lag::Partition;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use echotrace_core::link::minhash::Signature;
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::{InvalidPost, Post};
use echotrace_core::prepare::PreparedPost;
use echotrace_core::prepare::fingerprint::Fingerprint;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The version of the message's layout.
pub const PREPARED_VERSION: u32 = 2;

/// The oldest version this build reads: version 1 had no input partition and no idle markers.
const OLDEST_READ_VERSION: u32 = 1;

/// How far a chunk vector's length may be from 1 (they are L2-normalized when computed).
const UNIT_TOLERANCE: f32 = 1e-3;

/// The settings that decide what the stateless stage computes from a post, as a short hash that
/// every prepared message carries, and in words for the logs of both stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSettings {
    /// The settings in words.
    pub description: String,
    /// Their hash, in hex.
    pub hash: String,
}

impl PreparedSettings {
    /// The settings of `config` that the prepared fields and the embedding depend on, with this
    /// build's version (normalization and fingerprints may change between versions).
    pub fn of(config: &Config) -> PreparedSettings {
        let detector = &config.detector;
        let embed = &config.embed;
        let semantic = if detector.semantic.enabled {
            let model = match embed.encoder {
                Encoder::Transformer => format!("transformer {}/{}", file_name(&embed.model_dir), embed.model_file),
                Encoder::Static => format!("static {}", file_name(&embed.static_dir)),
            };
            format!(
                "semantic min_words {}, {model}, chunks of {} tokens, at most {}",
                detector.semantic.min_words, embed.chunk_tokens, embed.max_chunks
            )
        } else {
            "semantic off".to_owned()
        };
        let description = format!(
            "echotrace {}; min_features {}; shared urls {}; {semantic}",
            env!("CARGO_PKG_VERSION"),
            detector.min_features,
            detector.link_shared_urls,
        );
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(description.as_bytes()));
        PreparedSettings { description, hash }
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The message's layout.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreparedMessage {
    version: u32,
    settings: String,
    /// Where the post was read from (from version 2).
    #[serde(default)]
    input: Option<WirePartition>,
    post: Post,
    fingerprint: Fingerprint,
    signature: Option<Signature>,
    canonical_urls: Vec<String>,
    content_words: Vec<u64>,
    embedding_key: Option<u64>,
    embedding: Option<WireEmbedding>,
}

/// An input partition.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePartition {
    topic: String,
    partition: i32,
}

impl WirePartition {
    fn of(partition: &Partition) -> WirePartition {
        WirePartition { topic: partition.0.clone(), partition: partition.1 }
    }

    fn into_partition(self) -> Partition {
        (self.topic, self.partition)
    }
}

/// An idle marker's layout.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdleMessage {
    version: u32,
    /// The input partition read to its end.
    idle: WirePartition,
    /// When it was found read to its end, by the `prepare` stage's clock.
    at: DateTime<Utc>,
}

/// What tells an idle marker from a prepared post, read before either.
#[derive(Deserialize)]
struct MessageKind {
    #[serde(default)]
    idle: Option<serde::de::IgnoredAny>,
}

/// An embedding with its vectors in base64.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEmbedding {
    dimension: usize,
    tokens: u32,
    vectors: String,
}

/// Encodes a prepared post and its embedding, prepared with `settings` from a post read from `input`.
pub fn encode(
    prepared: &PreparedPost,
    embedding: Option<&TextEmbedding>,
    settings: &PreparedSettings,
    input: &Partition,
) -> Vec<u8> {
    let embedding = embedding.map(|embedding| WireEmbedding {
        dimension: embedding.dimension,
        tokens: embedding.tokens,
        vectors: STANDARD.encode(embedding.vectors.iter().flat_map(|value| value.to_le_bytes()).collect::<Vec<u8>>()),
    });
    let message = PreparedMessage {
        version: PREPARED_VERSION,
        settings: settings.hash.clone(),
        input: Some(WirePartition::of(input)),
        post: prepared.post.clone(),
        fingerprint: prepared.fingerprint,
        signature: prepared.signature,
        canonical_urls: prepared.canonical_urls.clone(),
        content_words: prepared.content_words.clone(),
        embedding_key: prepared.embedding_key,
        embedding,
    };
    serde_json::to_vec(&message).expect("prepared posts serialize")
}

/// Encodes an idle marker: `input` was read to its end at `at`, and everything read from it
/// before was sent before this.
pub fn encode_idle(input: &Partition, at: DateTime<Utc>) -> Vec<u8> {
    let message = IdleMessage { version: PREPARED_VERSION, idle: WirePartition::of(input), at };
    serde_json::to_vec(&message).expect("idle markers serialize")
}

/// A prepared message, decoded.
#[derive(Debug)]
pub enum Received {
    /// Prepared with this stage's settings: used as it is.
    Prepared(PreparedPost, Option<Arc<TextEmbedding>>, Option<Partition>),
    /// Prepared with other settings: only the post is used, prepared again here.
    Foreign(Post, Option<Partition>),
    /// An idle marker: the input partition was read to its end at this time.
    Idle(Partition, DateTime<Utc>),
}

/// Why a message on the prepared topic is not a prepared post.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPrepared {
    /// Not the layout of [`encode`]'s messages.
    #[error("message is not a prepared post: {0}")]
    Layout(String),
    /// A version this build does not read.
    #[error("prepared post version {0}, this build reads versions {OLDEST_READ_VERSION} to {PREPARED_VERSION}")]
    Version(u32),
    /// The post inside breaks the post contract.
    #[error("the prepared post's post is invalid: {0}")]
    Post(#[from] InvalidPost),
    /// The embedding's vectors are not chunks of unit vectors of its dimension.
    #[error("the prepared post's embedding is malformed: {0}")]
    Embedding(String),
}

impl InvalidPrepared {
    /// A short, stable name for the kind of error (dead-letter headers and metric labels).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidPrepared::Layout(_) => "invalid_prepared",
            InvalidPrepared::Version(_) => "prepared_version",
            InvalidPrepared::Post(error) => error.kind(),
            InvalidPrepared::Embedding(_) => "invalid_embedding",
        }
    }
}

/// Decodes a message of the prepared topic, for a stage whose settings hash is `settings`.
pub fn decode(bytes: &[u8], settings: &PreparedSettings) -> Result<Received, InvalidPrepared> {
    let layout = |error: serde_json::Error| InvalidPrepared::Layout(error.to_string());
    let kind: MessageKind = serde_json::from_slice(bytes).map_err(layout)?;
    if kind.idle.is_some() {
        let marker: IdleMessage = serde_json::from_slice(bytes).map_err(layout)?;
        if marker.version != PREPARED_VERSION {
            return Err(InvalidPrepared::Version(marker.version));
        }
        return Ok(Received::Idle(marker.idle.into_partition(), marker.at));
    }
    let message: PreparedMessage = serde_json::from_slice(bytes).map_err(layout)?;
    if !(OLDEST_READ_VERSION..=PREPARED_VERSION).contains(&message.version) {
        return Err(InvalidPrepared::Version(message.version));
    }
    message.post.validate(Utc::now())?;
    let embedding = message.embedding.map(decode_embedding).transpose()?;
    let input = message.input.map(WirePartition::into_partition);
    if message.settings != settings.hash {
        return Ok(Received::Foreign(message.post, input));
    }
    let prepared = PreparedPost {
        post: message.post,
        fingerprint: message.fingerprint,
        signature: message.signature,
        canonical_urls: message.canonical_urls,
        content_words: message.content_words,
        embedding_key: message.embedding_key,
    };
    Ok(Received::Prepared(prepared, embedding.map(Arc::new), input))
}

fn decode_embedding(wire: WireEmbedding) -> Result<TextEmbedding, InvalidPrepared> {
    let malformed = |reason: String| InvalidPrepared::Embedding(reason);
    let bytes = STANDARD.decode(&wire.vectors).map_err(|error| malformed(format!("vectors: {error}")))?;
    if wire.dimension == 0 || bytes.len() % (4 * wire.dimension) != 0 || bytes.is_empty() {
        return Err(malformed(format!("{} bytes are not whole vectors of dimension {}", bytes.len(), wire.dimension)));
    }
    let vectors: Vec<f32> =
        bytes.chunks_exact(4).map(|value| f32::from_le_bytes(value.try_into().expect("4 bytes"))).collect();
    for (index, chunk) in vectors.chunks_exact(wire.dimension).enumerate() {
        let length = chunk.iter().map(|value| value * value).sum::<f32>().sqrt();
        if !length.is_finite() || (length - 1.0).abs() > UNIT_TOLERANCE {
            return Err(malformed(format!("chunk {index} has length {length}, not 1")));
        }
    }
    Ok(TextEmbedding { vectors, dimension: wire.dimension, tokens: wire.tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use echotrace_core::detector::DetectorConfig;
    use echotrace_core::prepare::Preparer;

    fn post(text: &str) -> Post {
        let json = format!(
            r#"{{"id":"x:1","platform":"x","author":{{"id":"a","handle":"a"}},"created_at":"2026-01-05T10:00:00Z","text":"{text}"}}"#
        );
        Post::from_json(json.as_bytes()).expect("valid post")
    }

    fn input() -> Partition {
        ("posts".to_owned(), 2)
    }

    fn embedding() -> TextEmbedding {
        let third = 1.0f32 / 3.0f32.sqrt();
        TextEmbedding { vectors: vec![third, third, third, 0.6, 0.0, 0.8], dimension: 3, tokens: 17 }
    }

    #[test]
    fn a_prepared_post_comes_back_exactly() {
        let config = Config::default();
        let settings = PreparedSettings::of(&config);
        let prepared = Preparer::new(&config.detector)
            .prepare(post("Officials confirm the bridge at https://example.org/a?utm_source=x will close for repairs"));
        assert!(prepared.signature.is_some() && !prepared.canonical_urls.is_empty());
        let bytes = encode(&prepared, Some(&embedding()), &settings, &input());
        let Received::Prepared(decoded, decoded_embedding, from) = decode(&bytes, &settings).expect("decodes") else {
            panic!("same settings")
        };
        assert_eq!(decoded, prepared);
        assert_eq!(decoded_embedding.as_deref(), Some(&embedding()), "bit for bit");
        assert_eq!(from, Some(input()));
    }

    #[test]
    fn other_settings_keep_only_the_post() {
        let config = Config::default();
        let prepared = Preparer::new(&config.detector).prepare(post("a short text about the bridge closing soon"));
        let bytes = encode(&prepared, None, &PreparedSettings::of(&config), &input());
        let other = Config { detector: DetectorConfig { min_features: 9, ..DetectorConfig::default() }, ..config };
        let settings = PreparedSettings::of(&other);
        assert!(settings.description.contains("min_features 9"), "{}", settings.description);
        assert!(
            matches!(decode(&bytes, &settings), Ok(Received::Foreign(post, Some(from))) if post == prepared.post && from == input())
        );
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let config = Config::default();
        let settings = PreparedSettings::of(&config);
        let prepared = Preparer::new(&config.detector).prepare(post("a short text about the bridge closing soon"));
        let good: serde_json::Value =
            serde_json::from_slice(&encode(&prepared, Some(&embedding()), &settings, &input())).unwrap();
        let with = |pointer: &str, value: serde_json::Value| {
            let mut message = good.clone();
            *message.pointer_mut(pointer).expect("field") = value;
            decode(&serde_json::to_vec(&message).unwrap(), &settings).expect_err("refused").kind()
        };
        assert_eq!(decode(b"{\"post\":1}", &settings).expect_err("refused").kind(), "invalid_prepared");
        assert_eq!(with("/version", 3.into()), "prepared_version");
        assert_eq!(with("/input/partition", "0".into()), "invalid_prepared");
        assert_eq!(with("/post/id", "".into()), "invalid_field");
        assert_eq!(with("/embedding/dimension", 4.into()), "invalid_embedding");
        assert_eq!(with("/embedding/vectors", STANDARD.encode([0u8; 12]).into()), "invalid_embedding");
        assert_eq!(with("/embedding/vectors", "not base64!".into()), "invalid_embedding");
    }

    #[test]
    fn version_1_messages_are_read_without_their_input_partition() {
        let config = Config::default();
        let settings = PreparedSettings::of(&config);
        let prepared = Preparer::new(&config.detector).prepare(post("a short text about the bridge closing soon"));
        let mut message: serde_json::Value =
            serde_json::from_slice(&encode(&prepared, None, &settings, &input())).unwrap();
        message["version"] = 1.into();
        message.as_object_mut().unwrap().remove("input");
        let bytes = serde_json::to_vec(&message).unwrap();
        assert!(
            matches!(decode(&bytes, &settings), Ok(Received::Prepared(decoded, None, None)) if decoded == prepared)
        );
    }

    #[test]
    fn idle_markers_come_back_and_say_what_is_wrong() {
        let settings = PreparedSettings::of(&Config::default());
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let bytes = encode_idle(&input(), at);
        assert!(matches!(decode(&bytes, &settings), Ok(Received::Idle(from, when)) if from == input() && when == at));
        let mut marker: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        marker["at"] = "yesterday".into();
        let error = decode(&serde_json::to_vec(&marker).unwrap(), &settings).expect_err("refused");
        assert_eq!(error.kind(), "invalid_prepared", "{error}");
    }
}
