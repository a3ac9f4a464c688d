//! The link stage: the indexes that find what a post may derive from.
//!
//! Explicit ids (`repost_of`, `quote_of`, `reply_to`) come from the post itself; [`urls`] finds earlier
//! posts that shared the same canonical URL; [`near_dup`] finds earlier posts whose simhash is within
//! Hamming distance `k`, and [`minhash`] those whose word sets overlap; [`semantic`] finds paraphrases
//! and summaries by sentence embedding, for posts nothing else explains. The [`crate::detector`] ranks
//! the candidates and picks the primary parent. [`lexical`] holds the lexical indexes together and
//! answers a post's probe; [`shard`] says which linking shard owns a lookup key, and
//! [`lexical_shard`] is one such shard as a stage, its own process or one of the detector's, with
//! nothing lost; [`semantic_shards`] splits the semantic window by post, each
//! query asked of every shard and the answers merged to what one index gives.

pub mod lexical;
pub mod lexical_shard;
pub mod minhash;
pub mod near_dup;
pub mod quantized;
pub mod semantic;
pub mod semantic_shards;
pub mod shard;
pub mod urls;
