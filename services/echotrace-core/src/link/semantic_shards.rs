//! The semantic window split into shards by post, each query scattered to every shard and the
//! answers gathered exactly: the scatter-gather that `docs/scaling.md` chooses for the semantic
//! window over processes, here within one process (`detector.semantic.shards`).
//!
//! Each embedded post goes to one shard, by its node key modulo the shard count (posts arrive with
//! consecutive keys, so the shards stay even). A query asks every shard for
//!
//! - its `top_k` nearest posts by cosine: the window's `top_k` are the best of their union;
//! - its `lexical_top_k + top_k` posts sharing the most of the query's words, each word weighed by
//!   the whole window's document frequency (the sum of the shards' counts,
//!   [`DocumentFrequencies`]): the window's lexical candidates are the best of their union once the
//!   window's nearest by cosine are left out. At most `top_k` of one shard's list are left out, so
//!   its list holds every candidate the whole window would take from it.
//!
//! Ties go to the older post, by its arrival number across the shards, as one index orders them
//! by position. Eviction goes by arrival across the shards too: the window keeps every post's
//! arrival and evicts the same posts as one index would (each shard's posts are in arrival order,
//! so what leaves is a prefix of every shard). The evidence is weighed with the window's document
//! frequencies. So a split window gives every query what one index gives, candidate for candidate
//! and bit for bit (`tests::a_split_window_answers_as_one_index`; `tests/stages.rs`,
//! `a_split_semantic_window_links_as_one`, for the detector's links).
//!
//! Across processes the same merge holds; what a shard then needs besides its posts is the
//! window's document frequency of each query word and the arrival order, which the detecting
//! process that asks holds.

use super::semantic::{
    DocumentFrequencies, Neighbour, Prescan, SemanticConfig, SemanticEvidence, SemanticIndex, TextEmbedding,
};
use crate::detector::graph::NodeKey;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::num::NonZeroU32;

/// What one query asks of the window: its `top_k` nearest posts by cosine and, besides them, the
/// `lexical_top_k` posts sharing the most of its words, each with a cosine of at least
/// `min_cosine` ([`SemanticIndex::nearest`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanLimits {
    /// Nearest posts by cosine.
    pub top_k: usize,
    /// Posts sharing the most words, besides.
    pub lexical_top_k: usize,
    /// The least cosine weighed.
    pub min_cosine: f32,
}

impl ScanLimits {
    /// The limits semantic linking's settings set.
    pub fn of(config: &SemanticConfig) -> ScanLimits {
        ScanLimits { top_k: config.top_k, lexical_top_k: config.lexical_top_k, min_cosine: config.min_cosine }
    }
}

/// The embedded posts of the window: one index, or shards of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SemanticWindow {
    /// One index.
    Whole(SemanticIndex),
    /// Shards by post, merged exactly.
    Sharded(SemanticShards),
}

/// The first pass of one post's scan ([`SemanticIndex::prescan_all`]) in each shard of the window
/// (one for a whole window); `None` for a shard that held no post.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPrescan(Vec<Option<Prescan>>);

/// A window split into shards by post ([module docs](self)).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SemanticShards {
    shards: Vec<SemanticIndex>,
    /// The arrival numbers of each shard's posts, oldest first, position for position.
    arrivals_by_shard: Vec<VecDeque<u64>>,
    /// Every post held, in arrival order: its shard and what eviction reads.
    arrivals: VecDeque<Arrival>,
    /// The arrival number of `arrivals[0]`.
    first_arrival: u64,
    /// The dimension of the first embedding taken; others are refused, as one index refuses them.
    dimension: usize,
}

/// One post of a split window, in arrival order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Arrival {
    shard: u32,
    key: NodeKey,
    created_at_ms: i64,
}

/// A candidate from one shard: its score (cosine, or shared word weight), arrival, shard and
/// position there.
type Found = (f32, u64, usize, usize);

impl SemanticWindow {
    /// An empty window, split into `shards` when more than one.
    pub fn new(shards: NonZeroU32) -> SemanticWindow {
        match shards.get() {
            1 => SemanticWindow::Whole(SemanticIndex::new()),
            count => SemanticWindow::Sharded(SemanticShards::new(count as usize)),
        }
    }

    /// Posts in the window.
    pub fn len(&self) -> usize {
        match self {
            SemanticWindow::Whole(index) => index.len(),
            SemanticWindow::Sharded(shards) => shards.arrivals.len(),
        }
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`SemanticIndex::insert`].
    pub fn insert(&mut self, key: NodeKey, created_at_ms: i64, embedding: &TextEmbedding, words: Vec<u64>) {
        match self {
            SemanticWindow::Whole(index) => index.insert(key, created_at_ms, embedding, words),
            SemanticWindow::Sharded(shards) => shards.insert(key, created_at_ms, embedding, words),
        }
    }

    /// [`SemanticIndex::evict_before`].
    pub fn evict_before(&mut self, cutoff_ms: i64) -> usize {
        match self {
            SemanticWindow::Whole(index) => index.evict_before(cutoff_ms),
            SemanticWindow::Sharded(shards) => shards.evict_front_while(|arrival, _| arrival.created_at_ms < cutoff_ms),
        }
    }

    /// [`SemanticIndex::evict_keys_below`].
    pub fn evict_keys_below(&mut self, first_kept: NodeKey) -> usize {
        match self {
            SemanticWindow::Whole(index) => index.evict_keys_below(first_kept),
            SemanticWindow::Sharded(shards) => shards.evict_front_while(|arrival, _| arrival.key < first_kept),
        }
    }

    /// [`SemanticIndex::evict_beyond`].
    pub fn evict_beyond(&mut self, max_posts: usize) -> usize {
        match self {
            SemanticWindow::Whole(index) => index.evict_beyond(max_posts),
            SemanticWindow::Sharded(shards) => shards.evict_front_while(|_, len| len > max_posts),
        }
    }

    /// [`SemanticIndex::nearest`] within `limits`, with the prescan of [`Self::prescan_all`].
    pub fn nearest(
        &self,
        embedding: &TextEmbedding,
        words: &[u64],
        limits: ScanLimits,
        prescan: Option<&WindowPrescan>,
    ) -> Vec<Neighbour> {
        match self {
            SemanticWindow::Whole(index) => {
                let prescan = prescan.and_then(|prescan| prescan.0.first()).and_then(Option::as_ref);
                let ScanLimits { top_k, lexical_top_k, min_cosine } = limits;
                index.nearest(embedding, words, top_k, lexical_top_k, min_cosine, prescan)
            }
            SemanticWindow::Sharded(shards) => shards.nearest(embedding, words, limits, prescan),
        }
    }

    /// [`SemanticIndex::evidence`].
    pub fn evidence(&self, key: NodeKey, embedding: &TextEmbedding, words: &[u64]) -> Option<SemanticEvidence> {
        match self {
            SemanticWindow::Whole(index) => index.evidence(key, embedding, words),
            SemanticWindow::Sharded(shards) => shards.shard_of(key).evidence_weighed(key, embedding, words, shards),
        }
    }

    /// Whether a post is in the window.
    pub fn contains(&self, key: NodeKey) -> bool {
        match self {
            SemanticWindow::Whole(index) => index.contains(key),
            SemanticWindow::Sharded(shards) => shards.shard_of(key).contains(key),
        }
    }

    /// [`SemanticIndex::prescan_all`] in every shard, for the nearest by cosine within `limits`.
    pub fn prescan_all(
        &self,
        embeddings: &[&TextEmbedding],
        limits: ScanLimits,
        threads: usize,
    ) -> Vec<Option<WindowPrescan>> {
        let ScanLimits { top_k, min_cosine, .. } = limits;
        let indexes: Vec<&SemanticIndex> = match self {
            SemanticWindow::Whole(index) => vec![index],
            SemanticWindow::Sharded(shards) => shards.shards.iter().collect(),
        };
        let mut by_shard: Vec<_> =
            indexes.iter().map(|index| index.prescan_all(embeddings, top_k, min_cosine, threads).into_iter()).collect();
        (0..embeddings.len())
            .map(|_| {
                let prescans: Vec<Option<Prescan>> =
                    by_shard.iter_mut().map(|shard| shard.next().expect("one per embedding")).collect();
                prescans.iter().any(Option::is_some).then_some(WindowPrescan(prescans))
            })
            .collect()
    }
}

impl SemanticShards {
    /// `count` empty shards.
    fn new(count: usize) -> SemanticShards {
        SemanticShards {
            shards: vec![SemanticIndex::new(); count],
            arrivals_by_shard: vec![VecDeque::new(); count],
            arrivals: VecDeque::new(),
            first_arrival: 0,
            dimension: 0,
        }
    }

    /// The shard that holds (or would hold) the post `key`.
    fn shard_of(&self, key: NodeKey) -> &SemanticIndex {
        &self.shards[(key % self.shards.len() as u64) as usize]
    }

    /// Enters a post in its shard, unless one index would refuse it (no chunks, or another
    /// dimension than the first post's).
    fn insert(&mut self, key: NodeKey, created_at_ms: i64, embedding: &TextEmbedding, words: Vec<u64>) {
        if embedding.chunks() == 0 || (self.dimension != 0 && embedding.dimension != self.dimension) {
            return;
        }
        self.dimension = embedding.dimension;
        let shard = (key % self.shards.len() as u64) as usize;
        self.shards[shard].insert(key, created_at_ms, embedding, words);
        self.arrivals_by_shard[shard].push_back(self.first_arrival + self.arrivals.len() as u64);
        self.arrivals.push_back(Arrival { shard: shard as u32, key, created_at_ms });
    }

    /// Forgets posts from the oldest arrival while `evict(oldest, posts held)` says so, each from
    /// its shard; returns how many.
    fn evict_front_while(&mut self, mut evict: impl FnMut(&Arrival, usize) -> bool) -> usize {
        let mut by_shard = vec![0usize; self.shards.len()];
        let mut evicted = 0;
        while self.arrivals.front().is_some_and(|arrival| evict(arrival, self.arrivals.len())) {
            let arrival = self.arrivals.pop_front().expect("checked");
            self.first_arrival += 1;
            by_shard[arrival.shard as usize] += 1;
            evicted += 1;
        }
        for (shard, count) in by_shard.into_iter().enumerate().filter(|(_, count)| *count > 0) {
            self.shards[shard].evict_oldest(count);
            self.arrivals_by_shard[shard].drain(..count);
        }
        evicted
    }

    /// The window's nearest posts: every shard's, merged ([module docs](self)).
    fn nearest(
        &self,
        embedding: &TextEmbedding,
        words: &[u64],
        limits: ScanLimits,
        prescan: Option<&WindowPrescan>,
    ) -> Vec<Neighbour> {
        let ScanLimits { top_k, lexical_top_k, min_cosine } = limits;
        if self.arrivals.is_empty() || embedding.dimension != self.dimension || top_k + lexical_top_k == 0 {
            return Vec::new();
        }
        let held = || self.shards.iter().enumerate().filter(|(_, shard)| !shard.is_empty());
        let arrival = |shard: usize, position: usize| self.arrivals_by_shard[shard][position];
        let older_first = |(a, x, ..): &Found, (b, y, ..): &Found| b.total_cmp(a).then(x.cmp(y));

        let mut best: Vec<Found> = held()
            .flat_map(|(shard, index)| {
                let prescan = prescan.and_then(|prescan| prescan.0.get(shard)).and_then(Option::as_ref);
                let dense = if top_k == 0 { Vec::new() } else { index.densest(embedding, top_k, min_cosine, prescan) };
                dense.into_iter().map(move |(cosine, position)| (cosine, arrival(shard, position), shard, position))
            })
            .collect();
        best.sort_by(older_first);
        best.truncate(top_k);

        let mut lexical: Vec<Found> = held()
            .flat_map(|(shard, index)| {
                index
                    .lexical_nearest(words, lexical_top_k + top_k, &[], self)
                    .into_iter()
                    .map(move |(shared, position)| (shared, arrival(shard, position), shard, position))
            })
            .collect();
        lexical.sort_by(older_first);
        let taken: Vec<(usize, usize)> = best.iter().map(|(_, _, shard, position)| (*shard, *position)).collect();
        for (_, arrival, shard, position) in lexical
            .into_iter()
            .filter(|(_, _, shard, position)| !taken.contains(&(*shard, *position)))
            .take(lexical_top_k)
        {
            let cosine = self.shards[shard].coverage_at(position, embedding);
            if cosine >= min_cosine {
                best.push((cosine, arrival, shard, position));
            }
        }
        best.sort_by(older_first);
        best.into_iter()
            .map(|(cosine, _, shard, position)| {
                self.shards[shard].neighbour_at(position, cosine, embedding, words, self)
            })
            .collect()
    }
}

impl DocumentFrequencies for SemanticShards {
    fn documents(&self) -> usize {
        self.arrivals.len()
    }

    fn frequency(&self, word: u64) -> usize {
        self.shards.iter().map(|shard| shard.frequency(word)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One post of a generated window: which of a few topics its chunks lean to, its words, its
    /// time step, and whether it repeats an earlier post's embedding exactly (a tie).
    #[derive(Debug, Clone)]
    struct Step {
        topics: Vec<usize>,
        words: Vec<u64>,
        after_ms: i64,
        repeats: Option<usize>,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = (
            proptest::collection::vec(0usize..6, 1..4),
            proptest::collection::btree_set(0u64..30, 0..8),
            0i64..5_000,
            proptest::option::weighted(0.2, 1usize..10),
        )
            .prop_map(|(topics, words, after_ms, repeats)| Step {
                topics,
                words: words.into_iter().collect(),
                after_ms,
                repeats,
            });
        proptest::collection::vec(step, 1..80)
    }

    /// Unit chunk vectors of dimension 8, each leaning to its topic.
    fn embedding(topics: &[usize]) -> TextEmbedding {
        let mut vectors = Vec::new();
        for (chunk, topic) in topics.iter().enumerate() {
            let raw: Vec<f32> =
                (0..8).map(|axis| if axis == *topic { 1.0 } else { 0.05 * ((axis + chunk) % 3) as f32 }).collect();
            let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
            vectors.extend(raw.iter().map(|v| v / norm));
        }
        TextEmbedding { vectors, dimension: 8, tokens: 4 * topics.len() as u32 }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Posts enter one index and windows split into 2 and 3 shards, which evict by time, by
        /// key and by bound as the detector does; after each post every window is asked the
        /// same query, with a prescan taken before the post entered and without, and the
        /// evidence of an older post: the answers are the same, bit for bit.
        #[test]
        fn a_split_window_answers_as_one_index(steps in steps(), lexical_top_k in 0usize..4) {
            let mut windows: Vec<SemanticWindow> =
                [1, 2, 3].map(|count| SemanticWindow::new(NonZeroU32::new(count).unwrap())).into();
            let mut now = 0i64;
            let mut embeddings: Vec<TextEmbedding> = Vec::new();
            for (key, step) in steps.iter().enumerate() {
                now += step.after_ms;
                let embedding = match step.repeats {
                    Some(back) if back <= key => embeddings[key - back].clone(),
                    _ => embedding(&step.topics),
                };
                let limits = ScanLimits { top_k: 3, lexical_top_k, min_cosine: 0.2 };
                let prescans: Vec<_> =
                    windows.iter().map(|window| window.prescan_all(&[&embedding], limits, 1).remove(0)).collect();
                let key = key as NodeKey;
                for window in &mut windows {
                    window.evict_before(now - 60_000);
                    if key % 17 == 16 {
                        window.evict_keys_below(key.saturating_sub(20));
                    }
                    window.insert(key, now, &embedding, step.words.clone());
                    window.evict_beyond(40);
                }
                let asked: Vec<_> = windows
                    .iter()
                    .zip(&prescans)
                    .map(|(window, prescan)| {
                        let after = window.nearest(&embedding, &step.words, limits, None);
                        let before = window.nearest(&embedding, &step.words, limits, prescan.as_ref());
                        let older = window.evidence(key / 2, &embedding, &step.words);
                        (window.len(), window.contains(key / 3), after, before, older)
                    })
                    .collect();
                prop_assert_eq!(&asked[1], &asked[0], "2 shards, post {}", key);
                prop_assert_eq!(&asked[2], &asked[0], "3 shards, post {}", key);
                embeddings.push(embedding);
            }
        }
    }
}
