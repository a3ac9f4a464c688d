//! An [`Embedder`] with a cache of recent texts, embedding what a batch of posts needs at once.
//!
//! The pipeline and `echotrace backtest` both hand it a batch's embedding keys (the detector's
//! hash of each normalized text, or none for a post that needs no embedding) and texts; identical
//! texts in a batch are embedded once, recent ones come from the cache.

use super::{EmbedError, Embedder};
use echotrace_core::link::semantic::TextEmbedding;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Recent embeddings by normalized-text key, oldest forgotten first.
struct EmbeddingCache {
    entries: HashMap<u64, Arc<TextEmbedding>>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl EmbeddingCache {
    fn insert(&mut self, key: u64, embedding: Arc<TextEmbedding>) {
        if self.capacity == 0 || self.entries.insert(key, embedding).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            let oldest = self.order.pop_front().expect("non-empty");
            self.entries.remove(&oldest);
        }
    }
}

/// What embedding one batch did.
pub struct BatchEmbeddings {
    /// Each post's embedding, in order: none where it needs none, or where embedding failed.
    pub embeddings: Vec<Option<Arc<TextEmbedding>>>,
    /// Texts run through the model.
    pub embedded: u64,
    /// Posts whose text was embedded already (in the cache or earlier in the batch).
    pub reused: u64,
    /// Why the model failed on this batch, if it did: its posts are then linked without meaning.
    pub failure: Option<EmbedError>,
    /// Seconds the model took.
    pub seconds: f64,
}

/// Embeds the posts of a batch that need it: the model behind a cache here, or a cache on disk in
/// the benchmarks.
pub trait BatchEmbed {
    /// Embeds a batch: `posts` pairs each post's embedding key (none: it needs no embedding) with
    /// its text.
    fn embed_batch(&mut self, posts: &[(Option<u64>, &str)]) -> BatchEmbeddings;
}

impl<T: BatchEmbed + ?Sized> BatchEmbed for &mut T {
    fn embed_batch(&mut self, posts: &[(Option<u64>, &str)]) -> BatchEmbeddings {
        (**self).embed_batch(posts)
    }
}

/// The embedder and its cache.
pub struct CachedEmbedder {
    embedder: Embedder,
    cache: EmbeddingCache,
}

impl CachedEmbedder {
    /// `embedder` with a cache of `cache_entries` texts.
    pub fn new(embedder: Embedder, cache_entries: usize) -> CachedEmbedder {
        CachedEmbedder {
            embedder,
            cache: EmbeddingCache { entries: HashMap::new(), order: VecDeque::new(), capacity: cache_entries },
        }
    }
}

impl BatchEmbed for CachedEmbedder {
    fn embed_batch(&mut self, posts: &[(Option<u64>, &str)]) -> BatchEmbeddings {
        let mut missing: Vec<(u64, &str)> = Vec::new();
        let mut reused = 0;
        for (key, text) in posts {
            if let Some(key) = *key {
                if self.cache.entries.contains_key(&key) || missing.iter().any(|(k, _)| *k == key) {
                    reused += 1;
                } else {
                    missing.push((key, text));
                }
            }
        }
        let (mut embedded, mut failure, mut seconds) = (0, None, 0.0);
        if !missing.is_empty() {
            let started = Instant::now();
            let texts: Vec<&str> = missing.iter().map(|(_, text)| *text).collect();
            match self.embedder.embed(&texts) {
                Ok(embeddings) => {
                    for ((key, _), embedding) in missing.iter().zip(embeddings) {
                        self.cache.insert(*key, Arc::new(embedding));
                    }
                    embedded = texts.len() as u64;
                }
                Err(error) => failure = Some(error),
            }
            seconds = started.elapsed().as_secs_f64();
        }
        let embeddings =
            posts.iter().map(|(key, _)| key.and_then(|key| self.cache.entries.get(&key).cloned())).collect();
        BatchEmbeddings { embeddings, embedded, reused, failure, seconds }
    }
}
