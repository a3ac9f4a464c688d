//! # echotrace-core
//!
//! The detection core of echotrace: everything that turns a stream of posts into cascades, with no I/O.
//! The services (`echotrace run`, `demo`, `replay`) wrap it with Kafka, Parquet, HTTP and metrics.
//!
//! The modules read as the pipeline, one folder per stage:
//!
//! 1. [`post`] — the input contract: decoding and validating one post.
//! 2. [`prepare`] — the stateless stage, one post at a time or a batch across threads:
//!    [`prepare::normalize`] (NFKC, case folding, URL/mention/hashtag stripping, tokens, words or
//!    CJK characters), [`prepare::fingerprint`] (stable, versioned 64-bit simhash over the
//!    normalized features), the MinHash signature, canonical URLs and content words.
//! 3. [`link`] — the indexes that find candidate parents: canonical URLs ([`link::urls`]),
//!    near-duplicates ([`link::near_dup`], a Manku-style permuted-table Hamming index), word sets
//!    ([`link::minhash`]), held together by [`link::lexical`] and split by key into linking shards
//!    ([`link::lexical_shard`], the link stage); the semantic window ([`link::semantic`]).
//! 4. [`detector`] — the detect stage: one post in, one [`detector::Detection`] out: the parent
//!    chosen among the candidates, placed in the cascade graph ([`detector::graph`]: primary
//!    parents, generations, union-find merges, eviction).
//! 5. [`score`] — cascade features, rules and the alert lifecycle.
//!
//! [`stage`] gives the stages one shape: a configuration, a process function over a batch, a state
//! to snapshot and restore, and metrics; each stage's folder implements it.
//!
//! [`clock`] keeps event time, which the window evicts and the scorer slides on, out of reach of
//! posts dated ahead. [`state`] writes the detector and the scorer to a snapshot and reads them back.
//! [`parallel`] splits a batch of independent items over threads. [`order`] releases posts read
//! from several partitions in one order, by time and post id.
//!
//! ```
//! use echotrace_core::{detector::{Detector, DetectorConfig}, post::Post};
//!
//! let mut detector = Detector::new(DetectorConfig::default());
//! let original = Post::from_json(br#"{"id":"x:1","platform":"x","author":{"id":"a","handle":"a"},
//!     "created_at":"2026-11-01T09:00:00Z","text":"A long enough sentence about the harbour bridge closing tonight"}"#).unwrap();
//! let copy = Post::from_json(br#"{"id":"bluesky:2","platform":"bluesky","author":{"id":"b","handle":"b"},
//!     "created_at":"2026-11-01T09:01:00Z","text":"a long enough sentence about the Harbour Bridge closing tonight!"}"#).unwrap();
//! detector.process(original);
//! let detection = detector.process(copy).expect("a new post");
//! assert_eq!(detection.post.parent_id.as_deref(), Some("x:1"));
//! ```

pub mod clock;
pub mod detector;
pub mod link;
pub mod order;
pub mod parallel;
pub mod post;
pub mod prepare;
pub mod records;
pub mod score;
pub mod stage;
pub mod state;
