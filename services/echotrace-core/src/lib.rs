//! # echotrace-core
//!
//! The detection core of echotrace: everything that turns a stream of posts into cascades, with no I/O.
//! The services (`echotrace run`, `demo`, `replay`) wrap it with Kafka, Parquet, HTTP and metrics.
//!
//! The modules read as the pipeline:
//!
//! 1. [`post`] — the input contract: decoding and validating one post.
//! 2. [`prepare`] — the stateless stage, one post at a time or a batch across threads:
//!    [`normalize`] (NFKC, case folding, URL/mention/hashtag stripping, tokens, words or CJK
//!    characters), [`fingerprint`] (stable, versioned 64-bit simhash over the normalized features),
//!    the MinHash signature, canonical URLs and content words.
//! 3. [`link`] — candidate parents: explicit ids, canonical URLs ([`link::urls`]) and near-duplicates
//!    ([`link::near_dup`], a Manku-style permuted-table Hamming index).
//! 4. [`graph`] — the cascade graph: primary parents, generations, union-find merges, eviction.
//! 5. [`detector`] — the stages wired together: one post in, one [`detector::Detection`] out.
//! 6. [`score`] — cascade features, rules and the alert lifecycle.
//!
//! [`stage`] gives the stages one shape: a configuration, a process function over a batch, a state
//! to snapshot and restore, and metrics.
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
pub mod fingerprint;
pub mod graph;
pub mod link;
pub mod normalize;
pub mod order;
pub mod parallel;
pub mod post;
pub mod prepare;
pub mod records;
pub mod score;
pub mod stage;
pub mod state;
