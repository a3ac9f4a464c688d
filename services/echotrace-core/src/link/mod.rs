//! Linking: finding what a post derives from.
//!
//! Explicit ids (`repost_of`, `quote_of`, `reply_to`) come from the post itself; [`urls`] finds earlier
//! posts that shared the same canonical URL; [`near_dup`] finds earlier posts whose simhash is within
//! Hamming distance `k`, and [`minhash`] those whose word sets overlap; [`semantic`] finds paraphrases
//! and summaries by sentence embedding, for posts nothing else explains. The [`crate::detector`] ranks
//! the candidates and picks the primary parent. [`shard`] splits the lexical indexes by lookup key
//! across processes, with nothing lost; [`semantic_shards`] splits the semantic window by post, each
//! query asked of every shard and the answers merged to what one index gives.

pub mod minhash;
pub mod near_dup;
pub mod quantized;
pub mod semantic;
pub mod semantic_shards;
pub mod shard;
pub mod urls;
