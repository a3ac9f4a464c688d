//! Paraphrases and summaries: the nearest earlier posts by sentence embedding, and the evidence that
//! decides whether one of them is the parent.
//!
//! The embeddings come from outside the core (the service runs the model); each text arrives as one
//! unit vector per chunk of at most `max_tokens` tokens, so a summary of a 600-word article is
//! compared with every part of it. The cosine of a post to a candidate is how well the candidate
//! covers the post: each chunk of the post takes its best cosine with any chunk of the candidate, and
//! those are averaged. A one-chunk summary thus finds the part of the article it summarises, while a
//! long post is close to a candidate only if all of its parts are (two articles on the same story
//! share a paragraph, not their whole text).
//!
//! [`SemanticIndex`] holds the embeddings of the recent posts that were embedded (those no explicit
//! link or near-duplicate explained) and finds the `top_k` nearest by an exact scan; besides them,
//! postings of the posts' content words give the `lexical_top_k` posts sharing the most of the
//! post's words by IDF weight, which the cosine's top k misses for a one-line summary that shares
//! its article's names more clearly than its meaning. An exact scan was
//! chosen over an approximate index because only unexplained posts are embedded, which keeps the
//! window to tens of thousands of vectors; there a scan costs microseconds to a few milliseconds, less
//! than the model itself (see `benches/README.md`), evicts in step with the lexical indexes for free
//! and never misses. Vectors are stored contiguously and compacted as the window slides; a copy as
//! 8-bit codes lets the scan estimate every post cheaply and compute exactly only those that can
//! still reach the top k ([`super::quantized`]), with the exact scan's result.
//!
//! The embedding alone does not decide: a global cosine threshold either attributes summaries of
//! unseen articles to articles on the same story, or misses real paraphrases. [`SemanticEvidence`]
//! combines, for the best candidate:
//!
//! - `cosine`: how well the candidate covers the post (above);
//! - `word_overlap`: how much of the post's vocabulary the candidate contains, each word weighted by
//!   its inverse document frequency in the window (names, numbers and rare words count most);
//! - `lead_cosine`: how well the candidate's first chunk alone covers the post (news puts its story
//!   first);
//! - `margin`: how far the candidate's rank score is ahead of the best candidate in another cascade;
//! - `length_ratio`: the post's tokens over the candidate's.
//!
//! Candidates are ranked by `cosine + rank_overlap_weight × word_overlap`; the winner becomes a
//! `summary` edge when the post is clearly shorter (`length_ratio ≤ summary_max_length_ratio`) and a
//! `paraphrase` edge otherwise, each kind with its own calibrated logistic model ([`LinkModel`]) of
//! the probability that the candidate is the post's source. The models are fitted on one half of
//! the development streams and judged on the other (`benches/fit_semantic.py`,
//! `docs/semantic-linking.md`).
//!
//! A candidate that was itself linked by meaning is checked once more: the post must also pass the
//! model against the chain's origin (the detector asks [`SemanticIndex::evidence`]), so a summary of a
//! summary is attributed only when it is a summary of the original too. Without it, one doubtful link
//! (a summary of an unseen article attached to an article on the same story) draws every later
//! summary of the unseen article after it.

use crate::detector::graph::NodeKey;
use crate::link::quantized::{self, CodeScale};
use crate::parallel;
use crate::prepare::normalize::{NormalizedText, Script};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use xxhash_rust::xxh3::xxh3_64;

/// The default bound on the semantic window ([`SemanticConfig::max_window_posts`]): about where
/// an HNSW index (insert plus search) starts to cost less per post than the exact scan.
pub const MAX_WINDOW_POSTS: usize = 50_000;

/// The version of the semantic evidence: the model and the rules that weigh it.
pub const SEMANTIC_EVIDENCE_NAME: &str = "minilm-l6-v2+logistic-v1";

/// The embedding of one text: one L2-normalized vector per chunk, and the text's token count.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEmbedding {
    /// Chunk vectors, concatenated (`chunks × dimension` values).
    pub vectors: Vec<f32>,
    /// The model's dimension.
    pub dimension: usize,
    /// Tokens in the whole text (before chunking), which gives length ratios.
    pub tokens: u32,
}

impl TextEmbedding {
    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        self.vectors.len().checked_div(self.dimension).unwrap_or(0)
    }

    fn chunk(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dimension..(i + 1) * self.dimension]
    }

    /// A copy with each chunk vector moved by `size` at right angles to itself, in a direction drawn
    /// from `seed` and the chunk's `salt`, then normalized again: its cosine to the original is
    /// 1 / sqrt(1 + size²). For measuring how far decisions sit from their boundaries, that is what a
    /// processor's rounding could flip (`tests/determinism.rs`, `benches/src/bin/decision-flips.rs`).
    pub fn nudged(&self, size: f32, seed: u64, salt: u64) -> TextEmbedding {
        let mut vectors = Vec::with_capacity(self.vectors.len());
        for chunk in 0..self.chunks() {
            let original = self.chunk(chunk);
            let mut direction: Vec<f32> = (0..self.dimension as u64)
                .map(|i| {
                    let draw = xxhash_rust::xxh3::xxh3_64_with_seed(
                        &[salt ^ chunk as u64, i].map(u64::to_le_bytes).concat(),
                        seed,
                    );
                    (draw >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            // Only the part of the draw at right angles to the vector, so the size alone sets the angle.
            let along = dot(&direction, original);
            direction.iter_mut().zip(original).for_each(|(d, v)| *d -= along * v);
            let length = direction.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            let moved: Vec<f32> = original.iter().zip(&direction).map(|(v, d)| v + size * d / length).collect();
            let norm = moved.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            vectors.extend(moved.iter().map(|x| x / norm));
        }
        TextEmbedding { vectors, dimension: self.dimension, tokens: self.tokens }
    }
}

/// A calibrated logistic model of whether a candidate is the post's source, for one edge kind:
/// `probability = 1 / (1 + exp(-(bias + Σ weight × feature)))` over the evidence features, and the
/// candidate links when the probability reaches `min_probability`.
///
/// The weights are fitted, never set by hand: `benches/fit_semantic.py` fits them on one half of
/// the dev streams (split by article and headline) and chooses `min_probability` there, then
/// judges both on the other half (`docs/semantic-linking.md`, "Fitting the decision").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkModel {
    /// The intercept.
    pub bias: f32,
    /// Weight of the cosine (how well the candidate covers the post).
    pub cosine: f32,
    /// Weight of the IDF-weighted word overlap.
    pub word_overlap: f32,
    /// Weight of the cosine with the candidate's first chunk.
    pub lead_cosine: f32,
    /// Weight of the margin over the best candidate in another cascade.
    pub margin: f32,
    /// Weight of the natural logarithm of the length ratio (post tokens over candidate tokens).
    pub log_length_ratio: f32,
    /// Smallest probability that links.
    pub min_probability: f32,
}

impl LinkModel {
    /// The model's log-odds that the candidate of `evidence` is the post's source.
    pub fn log_odds(&self, evidence: &SemanticEvidence) -> f32 {
        self.bias
            + self.cosine * evidence.cosine
            + self.word_overlap * evidence.word_overlap
            + self.lead_cosine * evidence.lead_cosine
            + self.margin * evidence.margin
            + self.log_length_ratio * evidence.length_ratio.max(1e-3).ln()
    }

    /// The model's probability that the candidate of `evidence` is the post's source.
    pub fn probability(&self, evidence: &SemanticEvidence) -> f32 {
        1.0 / (1.0 + (-self.log_odds(evidence)).exp())
    }
}

/// Tuning of semantic linking. The models' defaults are fitted on half of the development streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticConfig {
    /// Whether posts are embedded and linked by meaning at all.
    pub enabled: bool,
    /// Texts with fewer content words than this are not embedded (too little meaning to attribute).
    pub min_words: u32,
    /// How many nearest posts by cosine are weighed.
    pub top_k: usize,
    /// How many posts sharing the most of the post's words (IDF-weighted) are weighed besides:
    /// a one-line summary often shares its article's names and numbers more clearly than its
    /// meaning, and the cosine's top k can miss it. 0 turns the lexical candidates off.
    pub lexical_top_k: usize,
    /// Candidates below this cosine are not weighed at all.
    pub min_cosine: f32,
    /// Weight of word overlap when ranking the candidates.
    pub rank_overlap_weight: f32,
    /// A post at most this long relative to its candidate (in tokens) is a summary of it.
    pub summary_max_length_ratio: f32,
    /// The model for `summary` edges.
    pub summary: LinkModel,
    /// The model for `paraphrase` edges.
    pub paraphrase: LinkModel,
    /// Whether a candidate that was itself linked by meaning is accepted only when the post also
    /// passes the rule against the chain's origin.
    pub check_origin: bool,
    /// The most embedded posts the semantic window holds; past it the oldest leave before the
    /// window's time would evict them. The exact scan's cost per post grows with it
    /// (`benches/README.md`, "Semantic window").
    pub max_window_posts: usize,
    /// Shards the semantic window is split into by post, each query asked of every shard and the
    /// answers merged ([`super::semantic_shards`]): the same links whatever the count.
    pub shards: NonZeroU32,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        SemanticConfig {
            enabled: true,
            min_words: 3,
            top_k: 5,
            // Off for the transformer's models, fitted without them; the static encoder's models
            // are fitted with 5 (`deploy/static-encoder.toml`, docs/semantic-linking.md).
            lexical_top_k: 0,
            min_cosine: 0.3,
            rank_overlap_weight: 1.0,
            summary_max_length_ratio: 0.6,
            // Fitted by `benches/fit_semantic.py` on the fit half of the dev streams (transformer
            // encoder): the summary model on the summary streams' rows, 2026-12-05; the paraphrase
            // model 2026-12-03. `docs/semantic-linking.md`, "Fitting the decision".
            summary: LinkModel {
                bias: -4.9900,
                cosine: 1.0611,
                word_overlap: 4.8312,
                lead_cosine: 2.5096,
                margin: 3.4224,
                log_length_ratio: 0.1042,
                min_probability: 0.80,
            },
            paraphrase: LinkModel {
                bias: -7.8062,
                cosine: 3.8198,
                word_overlap: 1.4942,
                lead_cosine: 5.3405,
                margin: 0.7591,
                log_length_ratio: 0.1400,
                min_probability: 0.20,
            },
            check_origin: true,
            max_window_posts: MAX_WINDOW_POSTS,
            shards: NonZeroU32::MIN,
        }
    }
}

/// Why a candidate is (or is not) a semantic parent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SemanticEvidence {
    /// How well the candidate covers the post: each of the post's chunks takes its best cosine with
    /// any of the candidate's chunks, averaged over the post's chunks.
    pub cosine: f32,
    /// IDF-weighted share of the post's words found in the candidate.
    pub word_overlap: f32,
    /// How well the candidate's first chunk alone covers the post: news puts its story first, so a
    /// summary of an article is close to its opening, a text on the same story often only to a
    /// later paragraph.
    pub lead_cosine: f32,
    /// Rank score ahead of the best candidate in another cascade (the full rank score if none).
    pub margin: f32,
    /// The post's tokens over the candidate's.
    pub length_ratio: f32,
    /// The probability, by the chosen kind's model, that the candidate is the post's source.
    pub score: f32,
    /// Whether the post is clearly shorter: a summary rather than a paraphrase.
    pub is_summary: bool,
    /// When the candidate was itself linked by meaning: the probability, by the model for the kind
    /// its length ratio gives, between the post and the origin of the candidate's chain.
    pub origin_score: Option<f32>,
}

/// A post in the index.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: NodeKey,
    created_at_ms: i64,
    tokens: u32,
    /// Absolute number of its first chunk; its chunks are contiguous.
    first_chunk: u64,
    chunks: u32,
    /// The largest norm and residual of its chunks' codes: what bounds the error of its estimate.
    code_bound: CodeScale,
    /// Hashes of its distinct content words, sorted.
    words: Box<[u64]>,
}

/// A candidate found by the scan, before the evidence is weighed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The candidate post.
    pub key: NodeKey,
    /// Its event time.
    pub created_at_ms: i64,
    /// Evidence with `score`, `margin` and `is_summary` not yet decided.
    pub evidence: SemanticEvidence,
}

/// The first pass of one post's scan by cosine ([`SemanticIndex::prescan_all`]), done ahead
/// against the window as it stood, to be finished when the post is linked: the entries added since
/// are estimated then, and the exact pass gives what a whole scan at that time gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Prescan {
    /// The absolute number past the last entry scanned.
    scanned_to: u64,
    /// The `top_k` largest lower bounds of the estimates, descending, with their entries' numbers:
    /// while those entries are in the window, k posts are surely at least this close.
    largest_lower: Vec<(f32, u64)>,
    /// The scanned entries whose upper bound reached the floor the lower bounds set, in entry
    /// order: (number, upper bound).
    candidates: Vec<(u64, f32)>,
}

/// Embeddings of recent posts, searched by exact scan, with windowed document frequencies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SemanticIndex {
    dimension: usize,
    entries: VecDeque<Entry>,
    /// Absolute number of the entry at `entries[0]`.
    entries_base: u64,
    /// Absolute entry number of each live post.
    entry_of: HashMap<NodeKey, u64>,
    /// Chunk vectors of the live entries (and evicted ones not compacted yet), contiguous.
    vectors: Vec<f32>,
    /// Absolute number of the chunk at `vectors[0]`.
    vectors_base: u64,
    /// The same vectors as codes, for the scan's first pass ([`quantized`]), with one scale per chunk.
    codes: Vec<i8>,
    code_scales: Vec<CodeScale>,
    next_chunk: u64,
    /// For each content word, the absolute numbers of the live entries that hold it, oldest first:
    /// its document frequency, and the lexical candidates' lookup.
    postings: HashMap<u64, VecDeque<u64>>,
}

/// The longest postings list the lexical candidates' walk always follows, however small the window:
/// past both it and a twentieth of the window, a word is too common to walk.
const MIN_POSTINGS_WALKED: usize = 64;

/// How many posts of a window hold each content word: what the inverse document frequencies that
/// weigh words are read from. An index answers for itself; a window split into shards
/// ([`super::semantic_shards`]) for the sum of its shards, so every shard weighs words as the
/// whole window would.
pub trait DocumentFrequencies {
    /// Posts in the window.
    fn documents(&self) -> usize;
    /// Posts in the window that hold `word`.
    fn frequency(&self, word: u64) -> usize;

    /// The inverse document frequency of a word among the window's posts.
    fn idf(&self, word: u64) -> f32 {
        let documents = self.documents() as f32;
        let frequency = self.frequency(word) as f32;
        ((documents + 1.0) / (frequency + 1.0)).ln().max(0.0) + 1e-3
    }

    /// IDF-weighted share of `words` found in `other` (both sorted).
    fn word_overlap(&self, words: &[u64], other: &[u64]) -> f32 {
        let (mut shared, mut total) = (0.0f32, 0.0f32);
        for word in words {
            let weight = self.idf(*word);
            total += weight;
            if other.binary_search(word).is_ok() {
                shared += weight;
            }
        }
        if total > 0.0 { shared / total } else { 0.0 }
    }
}

impl DocumentFrequencies for SemanticIndex {
    fn documents(&self) -> usize {
        self.entries.len()
    }

    fn frequency(&self, word: u64) -> usize {
        self.postings.get(&word).map_or(0, VecDeque::len)
    }
}

/// Words too common to say anything about derivation.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "also", "an", "and", "are", "as", "at", "be", "been", "before", "being", "but", "by", "can",
    "could", "did", "do", "does", "down", "for", "from", "had", "has", "have", "he", "her", "here", "him", "his", "i",
    "if", "in", "into", "is", "it", "its", "just", "may", "me", "might", "more", "most", "must", "my", "new", "no",
    "not", "of", "on", "or", "our", "out", "over", "said", "says", "she", "should", "so", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "up", "us", "very", "via", "was", "we",
    "were", "will", "with", "would", "you", "your",
];

/// The distinct content words of a normalized text, hashed and sorted: word tokens longer than one
/// character that are not stop words, and CJK character bigrams.
pub fn content_words(text: &NormalizedText) -> Vec<u64> {
    let mut words = Vec::with_capacity(text.len());
    let mut previous_cjk: Option<&str> = None;
    for (token, script) in text.tokens() {
        match script {
            Script::Word => {
                previous_cjk = None;
                if token.chars().nth(1).is_some() && STOP_WORDS.binary_search(&token).is_err() {
                    words.push(xxh3_64(token.as_bytes()));
                }
            }
            Script::Cjk => {
                if let Some(previous) = previous_cjk {
                    let bigram = [previous.as_bytes(), token.as_bytes()].concat();
                    words.push(xxh3_64(&bigram));
                }
                previous_cjk = Some(token);
            }
        }
    }
    words.sort_unstable();
    words.dedup();
    words
}

/// The dot product of two equally long vectors, in eight lanes so the compiler vectorizes it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl SemanticIndex {
    /// An empty index.
    pub fn new() -> SemanticIndex {
        SemanticIndex::default()
    }

    /// Posts in the index.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `top_k` posts with the largest cosine to `embedding`, and besides them the
    /// `lexical_top_k` posts that share the most of `words` by IDF weight, each with a cosine of at
    /// least `min_cosine`; best cosine first (ties to the older post), with their word overlap and
    /// length ratio.
    ///
    /// Two passes give the exact scan's result: every post's cosine is estimated from the codes with
    /// its error bound, and only the posts whose estimate plus bound reaches both `min_cosine` and
    /// the k-th best estimate minus bound are computed exactly ([`quantized`]).
    ///
    /// `prescan`, when given, is this embedding's first pass done earlier against this index
    /// ([`Self::prescan_all`], with the same `top_k` and `min_cosine`): only what entered the
    /// window since is estimated now. The result is the same as without it.
    pub fn nearest(
        &self,
        embedding: &TextEmbedding,
        words: &[u64],
        top_k: usize,
        lexical_top_k: usize,
        min_cosine: f32,
        prescan: Option<&Prescan>,
    ) -> Vec<Neighbour> {
        if self.entries.is_empty() || embedding.dimension != self.dimension || top_k + lexical_top_k == 0 {
            return Vec::new();
        }
        let mut best = self.densest(embedding, top_k, min_cosine, prescan);
        for (_, position) in self.lexical_nearest(words, lexical_top_k, &best, self) {
            let cosine = self.coverage_at(position, embedding);
            if cosine >= min_cosine {
                best.push((cosine, position));
            }
        }
        best.sort_by(|(a, x), (b, y)| b.total_cmp(a).then(x.cmp(y)));
        best.into_iter().map(|(cosine, position)| self.neighbour_at(position, cosine, embedding, words, self)).collect()
    }

    /// The post at `position` in the window as a candidate whose cosine is known, its evidence
    /// weighing words by `frequencies`.
    pub(crate) fn neighbour_at(
        &self,
        position: usize,
        cosine: f32,
        embedding: &TextEmbedding,
        words: &[u64],
        frequencies: &impl DocumentFrequencies,
    ) -> Neighbour {
        let entry = &self.entries[position];
        Neighbour {
            key: entry.key,
            created_at_ms: entry.created_at_ms,
            evidence: self.evidence_with(entry, cosine, embedding, words, frequencies),
        }
    }

    /// [`Self::coverage`] of the post at `position` in the window.
    pub(crate) fn coverage_at(&self, position: usize, embedding: &TextEmbedding) -> f32 {
        self.coverage(&self.entries[position], embedding)
    }

    /// The `top_k` entries that share the most of `words` by IDF weight, leaving out those in
    /// `taken`, as (shared weight, position); best first, ties to the older. Words held by more
    /// than a twentieth of the window (at least [`MIN_POSTINGS_WALKED`]) are skipped: they weigh
    /// little and would make the walk as long as the window. The window is the one `frequencies`
    /// counts: this index, or every shard of a split window.
    pub(crate) fn lexical_nearest(
        &self,
        words: &[u64],
        top_k: usize,
        taken: &[(f32, usize)],
        frequencies: &impl DocumentFrequencies,
    ) -> Vec<(f32, usize)> {
        if top_k == 0 {
            return Vec::new();
        }
        let longest_walked = (frequencies.documents() / 20).max(MIN_POSTINGS_WALKED);
        // Weights by window position, and the positions touched: cheaper than a map keyed by
        // entry (hashing was 8% of the mix's linking).
        let mut shared = vec![0.0f32; self.entries.len()];
        let mut touched = Vec::new();
        for word in words {
            let Some(holders) = self.postings.get(word).filter(|_| frequencies.frequency(*word) <= longest_walked)
            else {
                continue;
            };
            let weight = frequencies.idf(*word);
            for holder in holders {
                let position = (holder - self.entries_base) as usize;
                if shared[position] == 0.0 {
                    touched.push(position);
                }
                shared[position] += weight;
            }
        }
        let mut ranked: Vec<(f32, usize)> = touched
            .into_iter()
            .map(|position| (shared[position], position))
            .filter(|(_, position)| !taken.iter().any(|(_, other)| other == position))
            .collect();
        ranked.sort_by(|(a, x), (b, y)| b.total_cmp(a).then(x.cmp(y)));
        ranked.truncate(top_k);
        ranked
    }

    /// The `top_k` entries with the largest cosine of at least `min_cosine`, as (cosine, position),
    /// best first: the first pass (finishing `prescan` when it still holds), then the exact cosine
    /// of the entries it leaves.
    pub(crate) fn densest(
        &self,
        embedding: &TextEmbedding,
        top_k: usize,
        min_cosine: f32,
        prescan: Option<&Prescan>,
    ) -> Vec<(f32, usize)> {
        if top_k == 0 {
            return Vec::new();
        }
        let (query_codes, query_scales) = self.query_codes(embedding);
        // A prescan holds while the entries behind its k lower bounds are in the window; once one
        // has left, fewer posts may be surely ahead, so the window is scanned again whole. With
        // fewer than k it holds every entry it scanned, and those that left are dropped.
        let holds = |prescan: &&Prescan| {
            prescan.largest_lower.len() < top_k
                || prescan.largest_lower.iter().all(|(_, number)| *number >= self.entries_base)
        };
        let scan = self.first_pass(&query_codes, &query_scales, top_k, min_cosine, prescan.filter(holds));
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(top_k + 1);
        for (number, _) in scan.candidates {
            let position = (number - self.entries_base) as usize;
            let cosine = self.coverage(&self.entries[position], embedding);
            if cosine < min_cosine || (best.len() == top_k && cosine <= best[top_k - 1].0) {
                continue;
            }
            let at = best.partition_point(|(other, _)| *other >= cosine);
            best.insert(at, (cosine, position));
            best.truncate(top_k);
        }
        best
    }

    /// The first pass of the scan for each embedding against the window as it stands now, split
    /// over at most `threads` threads; each is finished by [`Self::nearest`] when its post is
    /// linked. `None` for an embedding of another dimension than the window's.
    pub fn prescan_all(
        &self,
        embeddings: &[&TextEmbedding],
        top_k: usize,
        min_cosine: f32,
        threads: usize,
    ) -> Vec<Option<Prescan>> {
        let prescan = |embedding: &TextEmbedding| {
            (embedding.dimension == self.dimension && top_k > 0).then(|| {
                let (query_codes, query_scales) = self.query_codes(embedding);
                self.first_pass(&query_codes, &query_scales, top_k, min_cosine, None)
            })
        };
        // An empty window has nothing to scan: no thread is worth starting.
        let threads = if self.entries.is_empty() { 1 } else { threads };
        parallel::map_in_order(embeddings.to_vec(), threads, 1, prescan)
    }

    /// An embedding's chunks as codes, with their scales.
    fn query_codes(&self, embedding: &TextEmbedding) -> (Vec<i8>, Vec<CodeScale>) {
        let mut query_codes = Vec::with_capacity(embedding.vectors.len());
        let query_scales: Vec<CodeScale> = (0..embedding.chunks())
            .map(|chunk| quantized::quantize_into(embedding.chunk(chunk), &mut query_codes))
            .collect();
        (query_codes, query_scales)
    }

    /// The scan's first pass: every entry's cosine estimated from the codes, and the entries whose
    /// estimate plus bound reaches both `min_cosine` and the k-th best estimate minus bound (a post
    /// below that has k posts surely ahead). With `earlier`, a first pass that still holds, only
    /// the entries added since it are estimated, and its candidates still in the window are kept.
    fn first_pass(
        &self,
        query_codes: &[i8],
        query_scales: &[CodeScale],
        top_k: usize,
        min_cosine: f32,
        earlier: Option<&Prescan>,
    ) -> Prescan {
        let scanned_to = self.entries_base + self.entries.len() as u64;
        let from = earlier.map_or(self.entries_base, |earlier| earlier.scanned_to.max(self.entries_base));
        let estimates = self.estimated_coverages(query_codes, query_scales, (from - self.entries_base) as usize);
        let mut largest_lower: Vec<(f32, u64)> = earlier.map_or_else(
            || Vec::with_capacity(top_k + 1),
            |earlier| {
                earlier.largest_lower.iter().copied().filter(|(_, number)| *number >= self.entries_base).collect()
            },
        );
        for (number, (estimate, bound)) in (from..).zip(&estimates) {
            let lower = estimate - bound;
            if largest_lower.len() < top_k || lower > largest_lower[top_k - 1].0 {
                let at = largest_lower.partition_point(|(other, _)| *other >= lower);
                largest_lower.insert(at, (lower, number));
                largest_lower.truncate(top_k);
            }
        }
        let floor = if largest_lower.len() == top_k { largest_lower[top_k - 1].0.max(min_cosine) } else { min_cosine };
        let kept = earlier.into_iter().flat_map(|earlier| earlier.candidates.iter().copied());
        let added = (from..).zip(estimates.iter().map(|(estimate, bound)| estimate + bound));
        let candidates = kept
            .filter(|(number, _)| *number >= self.entries_base)
            .chain(added)
            .filter(|(_, upper)| *upper >= floor)
            .collect();
        Prescan { scanned_to, largest_lower, candidates }
    }

    /// The evidence between a post and one indexed post, if that post is still in the window.
    pub fn evidence(&self, key: NodeKey, embedding: &TextEmbedding, words: &[u64]) -> Option<SemanticEvidence> {
        self.evidence_weighed(key, embedding, words, self)
    }

    /// [`Self::evidence`], weighing words by `frequencies`.
    pub(crate) fn evidence_weighed(
        &self,
        key: NodeKey,
        embedding: &TextEmbedding,
        words: &[u64],
        frequencies: &impl DocumentFrequencies,
    ) -> Option<SemanticEvidence> {
        if embedding.dimension != self.dimension {
            return None;
        }
        let position = self.entry_of.get(&key)?.checked_sub(self.entries_base)?;
        let entry = self.entries.get(position as usize)?;
        Some(self.evidence_with(entry, self.coverage(entry, embedding), embedding, words, frequencies))
    }

    /// Whether a post is in the window.
    pub fn contains(&self, key: NodeKey) -> bool {
        self.entry_of.contains_key(&key)
    }

    /// How well `entry` covers the embedded text: for each of the text's chunks its best cosine with
    /// any of the entry's chunks, averaged over the text's chunks.
    fn coverage(&self, entry: &Entry, embedding: &TextEmbedding) -> f32 {
        let start = (entry.first_chunk - self.vectors_base) as usize * self.dimension;
        let stored = &self.vectors[start..start + entry.chunks as usize * self.dimension];
        let mut sum = 0.0f32;
        for query in 0..embedding.chunks() {
            let best = stored.chunks_exact(self.dimension).map(|chunk| dot(chunk, embedding.chunk(query)));
            sum += best.fold(f32::MIN, f32::max);
        }
        sum / embedding.chunks().max(1) as f32
    }

    /// [`Self::coverage`] of every entry from `first` (a position in the window) on, in order,
    /// estimated from the codes, and the bound on each estimate's error.
    fn estimated_coverages(&self, query_codes: &[i8], query_scales: &[CodeScale], first: usize) -> Vec<(f32, f32)> {
        let Some(front) = self.entries.get(first) else { return Vec::new() };
        // Entries' chunks are contiguous and in entry order from the front entry's first chunk.
        let live_from = (front.first_chunk - self.vectors_base) as usize;
        let (codes, scales) = (&self.codes[live_from * self.dimension..], &self.code_scales[live_from..]);
        let mut sums = vec![(0.0f32, 0.0f32); self.entries.len() - first];
        let mut dots = Vec::with_capacity(scales.len());
        for (query, query_scale) in query_codes.chunks_exact(self.dimension).zip(query_scales) {
            quantized::dots_with_each(query, codes, &mut dots);
            let mut chunk = 0;
            for (entry, (sum, bound)) in self.entries.range(first..).zip(sums.iter_mut()) {
                let chunks = chunk..chunk + entry.chunks as usize;
                let best = dots[chunks.clone()]
                    .iter()
                    .zip(&scales[chunks])
                    .map(|(dot, scale)| quantized::estimate(*query_scale, *scale, *dot))
                    .fold(f32::MIN, f32::max);
                *sum += best;
                // The bound of a max over the entry's chunks is at most the bound with their
                // largest norm and residual.
                *bound += quantized::error_bound(*query_scale, entry.code_bound);
                chunk += entry.chunks as usize;
            }
        }
        let query_chunks = query_scales.len().max(1) as f32;
        sums.iter().map(|(sum, bound)| (sum / query_chunks, bound / query_chunks)).collect()
    }

    /// How well the first chunk of `entry` covers the embedded text: each of the text's chunks'
    /// cosine with it, averaged.
    fn lead_coverage(&self, entry: &Entry, embedding: &TextEmbedding) -> f32 {
        let start = (entry.first_chunk - self.vectors_base) as usize * self.dimension;
        let lead = &self.vectors[start..start + self.dimension];
        let sum: f32 = (0..embedding.chunks()).map(|query| dot(lead, embedding.chunk(query))).sum();
        sum / embedding.chunks().max(1) as f32
    }

    /// The evidence for `entry` with its cosine known; the margin and the decision come later.
    fn evidence_with(
        &self,
        entry: &Entry,
        cosine: f32,
        embedding: &TextEmbedding,
        words: &[u64],
        frequencies: &impl DocumentFrequencies,
    ) -> SemanticEvidence {
        SemanticEvidence {
            cosine,
            word_overlap: frequencies.word_overlap(words, &entry.words),
            lead_cosine: self.lead_coverage(entry, embedding),
            margin: 0.0,
            length_ratio: embedding.tokens as f32 / entry.tokens.max(1) as f32,
            score: 0.0,
            is_summary: false,
            origin_score: None,
        }
    }

    /// Adds a post with its distinct content words ([`content_words`]). Posts are expected in
    /// roughly ascending time; eviction goes by arrival order.
    pub fn insert(&mut self, key: NodeKey, created_at_ms: i64, embedding: &TextEmbedding, words: Vec<u64>) {
        debug_assert!(words.windows(2).all(|pair| pair[0] < pair[1]), "content words are sorted and distinct");
        if embedding.chunks() == 0 {
            return;
        }
        if self.dimension == 0 {
            self.dimension = embedding.dimension;
        }
        if embedding.dimension != self.dimension {
            return;
        }
        let number = self.entries_base + self.entries.len() as u64;
        for word in &words {
            self.postings.entry(*word).or_default().push_back(number);
        }
        self.vectors.extend_from_slice(&embedding.vectors);
        let mut code_bound = CodeScale::default();
        for chunk in 0..embedding.chunks() {
            let scale = quantized::quantize_into(embedding.chunk(chunk), &mut self.codes);
            code_bound.residual = code_bound.residual.max(scale.residual);
            code_bound.norm = code_bound.norm.max(scale.norm);
            self.code_scales.push(scale);
        }
        self.entry_of.insert(key, number);
        self.entries.push_back(Entry {
            key,
            created_at_ms,
            tokens: embedding.tokens,
            first_chunk: self.next_chunk,
            chunks: embedding.chunks() as u32,
            code_bound,
            words: words.into_boxed_slice(),
        });
        self.next_chunk += embedding.chunks() as u64;
    }

    /// Forgets posts that arrived before the first one at or after `cutoff_ms`; returns how many.
    pub fn evict_before(&mut self, cutoff_ms: i64) -> usize {
        self.evict_front_while(|entry, _| entry.created_at_ms < cutoff_ms)
    }

    /// Forgets the posts whose node key (given in arrival order) is below `first_kept`.
    pub fn evict_keys_below(&mut self, first_kept: NodeKey) -> usize {
        self.evict_front_while(|entry, _| entry.key < first_kept)
    }

    /// Forgets the oldest posts until at most `max_posts` are left; returns how many.
    pub fn evict_beyond(&mut self, max_posts: usize) -> usize {
        self.evict_front_while(|_, len| len > max_posts)
    }

    /// Forgets the `count` oldest posts (all of them, if it holds fewer).
    pub(crate) fn evict_oldest(&mut self, count: usize) {
        let mut left = count;
        self.evict_front_while(|_, _| {
            let evict = left > 0;
            left = left.saturating_sub(1);
            evict
        });
    }

    /// Forgets posts from the oldest while `evict(oldest, posts held)` says so.
    fn evict_front_while(&mut self, mut evict: impl FnMut(&Entry, usize) -> bool) -> usize {
        let mut evicted = 0;
        while self.entries.front().is_some_and(|entry| evict(entry, self.entries.len())) {
            let entry = self.entries.pop_front().expect("checked");
            self.entries_base += 1;
            if self.entry_of.get(&entry.key) == Some(&(self.entries_base - 1)) {
                self.entry_of.remove(&entry.key);
            }
            // Entries leave oldest first, so each of its words' postings starts with it.
            for word in entry.words.iter() {
                if let Some(holders) = self.postings.get_mut(word) {
                    debug_assert_eq!(holders.front(), Some(&(self.entries_base - 1)));
                    holders.pop_front();
                    if holders.is_empty() {
                        self.postings.remove(word);
                    }
                }
            }
            evicted += 1;
        }
        // Compact once the evicted prefix is at least half the buffer: amortized O(1) per vector.
        let live_from = self.entries.front().map_or(self.next_chunk, |entry| entry.first_chunk);
        let dead = (live_from - self.vectors_base) as usize * self.dimension;
        if dead > 0 && dead * 2 >= self.vectors.len() {
            self.vectors.drain(..dead);
            self.codes.drain(..dead);
            self.code_scales.drain(..(live_from - self.vectors_base) as usize);
            self.vectors_base = live_from;
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::normalize::normalize;

    fn unit(values: &[f32]) -> TextEmbedding {
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        TextEmbedding { vectors: values.iter().map(|v| v / norm).collect(), dimension: values.len(), tokens: 10 }
    }

    #[test]
    fn a_nudge_moves_each_chunk_by_the_size_asked_and_keeps_it_a_unit_vector() {
        let mut two = unit(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        two.vectors.extend(unit(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).vectors);
        let moved = two.nudged(0.1, 7, 3);
        assert_eq!(moved.chunks(), 2);
        for chunk in 0..2 {
            let cosine = dot(moved.chunk(chunk), two.chunk(chunk));
            assert!((cosine - 1.0 / (1.0f32 + 0.01).sqrt()).abs() < 1e-5, "{cosine}");
            assert!((dot(moved.chunk(chunk), moved.chunk(chunk)) - 1.0).abs() < 1e-5);
        }
        assert_eq!(moved, two.nudged(0.1, 7, 3), "the same seed moves it the same way");
        assert_ne!(moved, two.nudged(0.1, 8, 3));
    }

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.25).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }

    #[test]
    fn content_words_drop_stop_words_and_single_letters() {
        let words = content_words(&normalize("The harbour bridge is a bridge, closing at 9 tonight"));
        let expected: Vec<u64> = {
            let mut w: Vec<u64> =
                ["harbour", "bridge", "closing", "tonight"].iter().map(|w| xxh3_64(w.as_bytes())).collect();
            w.sort_unstable();
            w
        };
        assert_eq!(words, expected);
    }

    #[test]
    fn nearest_ranks_by_cosine_and_takes_the_best_chunk() {
        let mut index = SemanticIndex::new();
        index.insert(1, 0, &unit(&[1.0, 0.0, 0.0]), vec![1, 2]);
        // Two chunks: the second one points where the query does.
        let mut two = unit(&[0.0, 1.0, 0.0]);
        two.vectors.extend(unit(&[0.0, 0.6, 0.8]).vectors);
        two.tokens = 40;
        index.insert(2, 1, &two, vec![2, 3]);
        let found = index.nearest(&unit(&[0.0, 0.0, 1.0]), &[3], 5, 0, 0.5, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, 2);
        assert!((found[0].evidence.cosine - 0.8).abs() < 1e-5);
        assert!((found[0].evidence.length_ratio - 0.25).abs() < 1e-6);
        assert_eq!(found[0].evidence.word_overlap, 1.0);
        // Its first chunk alone covers the query far less than its best chunk does.
        assert!(found[0].evidence.lead_cosine.abs() < 1e-5, "the first chunk is at right angles");
    }

    #[test]
    fn the_two_pass_scan_finds_what_the_exact_scan_finds() {
        let random = |seed: u64, i: u64| {
            (xxh3_64(&[seed, i].map(u64::to_le_bytes).concat()) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let draw = |seed: u64, centre: u64, spread: f32| -> Vec<f32> {
            (0..64).map(|i| random(centre, i) + spread * random(seed, i)).collect()
        };
        let embedding = |chunks: Vec<Vec<f32>>| {
            let vectors: Vec<f32> = chunks
                .iter()
                .flat_map(|c| {
                    let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
                    c.iter().map(move |v| v / norm)
                })
                .collect();
            TextEmbedding { vectors, dimension: 64, tokens: 10 }
        };
        let mut index = SemanticIndex::new();
        for key in 0..400u64 {
            // Twenty topics, one to three chunks a post: many near ties, as on a busy story.
            let chunks = (0..1 + key % 3).map(|c| draw(key * 7 + c, key % 20, 0.3)).collect();
            index.insert(key, key as i64, &embedding(chunks), vec![key]);
        }
        let mut checked = 0;
        for query in 0..60u64 {
            let chunks = (0..1 + query % 2).map(|c| draw(10_000 + query * 3 + c, query % 20, 0.2)).collect();
            let query = embedding(chunks);
            let mut exact: Vec<(f32, u64)> =
                (0..400u64).map(|key| (index.evidence(key, &query, &[]).unwrap().cosine, key)).collect();
            exact.retain(|(cosine, _)| *cosine >= 0.3);
            exact.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            exact.truncate(5);
            let found: Vec<(f32, u64)> =
                index.nearest(&query, &[], 5, 0, 0.3, None).iter().map(|n| (n.evidence.cosine, n.key)).collect();
            assert_eq!(found, exact);
            checked += found.len();
        }
        assert!(checked > 100, "the queries find neighbours: {checked}");
    }

    #[test]
    fn a_scan_finished_from_its_prescan_finds_what_a_whole_scan_finds() {
        let random = |seed: u64, i: u64| {
            (xxh3_64(&[seed, i].map(u64::to_le_bytes).concat()) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let embedding = |seed: u64, topic: u64, chunks: u64| {
            let mut vectors = Vec::new();
            for chunk in 0..chunks {
                let values: Vec<f32> = (0..32).map(|i| random(topic, i) + 0.4 * random(seed * 3 + chunk, i)).collect();
                let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
                vectors.extend(values.iter().map(|v| v / norm));
            }
            TextEmbedding { vectors, dimension: 32, tokens: 10 }
        };
        let (mut fresh, mut stale, mut short, mut checked) = (0, 0, 0, 0);
        for round in 0..30u64 {
            // The window moves on before the posts are linked: posts enter and few leave; or so
            // many leave that some prescans no longer hold; or a window smaller than k is replaced.
            let (first, then, kept) = match round % 3 {
                0 => (150, 10 + round, 155),
                1 => (150, 10 + round, 60),
                _ => (3, 6, 4),
            };
            let mut index = SemanticIndex::new();
            let mut key = 0u64;
            let mut insert = |index: &mut SemanticIndex, count: u64| {
                for _ in 0..count {
                    index.insert(key, key as i64, &embedding(round * 1000 + key, key % 8, 1 + key % 3), vec![key]);
                    key += 1;
                }
            };
            insert(&mut index, first);
            let queries: Vec<TextEmbedding> =
                (0..8).map(|q| embedding(90_000 + round * 10 + q, q, 1 + q % 2)).collect();
            let refs: Vec<&TextEmbedding> = queries.iter().collect();
            let prescans = index.prescan_all(&refs, 5, 0.2, 3);
            assert_eq!(prescans, index.prescan_all(&refs, 5, 0.2, 1), "threads change nothing");
            insert(&mut index, then);
            index.evict_beyond(kept);
            for (query, prescan) in queries.iter().zip(&prescans) {
                let prescan = prescan.as_ref().expect("same dimension");
                if prescan.largest_lower.len() < 5 {
                    short += 1;
                } else if prescan.largest_lower.iter().all(|(_, number)| *number >= index.entries_base) {
                    fresh += 1;
                } else {
                    stale += 1;
                }
                let whole: Vec<(f32, NodeKey)> =
                    index.nearest(query, &[], 5, 0, 0.2, None).iter().map(|n| (n.evidence.cosine, n.key)).collect();
                let finished: Vec<(f32, NodeKey)> = index
                    .nearest(query, &[], 5, 0, 0.2, Some(prescan))
                    .iter()
                    .map(|n| (n.evidence.cosine, n.key))
                    .collect();
                assert_eq!(finished, whole, "round {round}");
                checked += whole.len();
            }
        }
        assert!(
            fresh > 0 && stale > 0 && short > 0 && checked > 400,
            "every path taken: {fresh} held, {stale} stale, {short} short of k, {checked} found"
        );
    }

    #[test]
    fn a_prescan_of_a_window_smaller_than_k_forgets_the_posts_that_left() {
        let query = unit(&[1.0, 0.0, 0.0]);
        let mut index = SemanticIndex::new();
        index.insert(1, 1, &unit(&[1.0, 0.0, 0.0]), vec![]);
        let prescan = index.prescan_all(&[&query], 2, 0.0, 1).remove(0).expect("same dimension");
        // The one post the prescan saw leaves; two farther ones enter.
        index.evict_beyond(0);
        index.insert(2, 2, &unit(&[0.9, 0.436, 0.0]), vec![]);
        index.insert(3, 3, &unit(&[0.5, 0.866, 0.0]), vec![]);
        let keys = |found: Vec<Neighbour>| found.iter().map(|n| n.key).collect::<Vec<_>>();
        assert_eq!(keys(index.nearest(&query, &[], 2, 0, 0.0, None)), [2, 3]);
        assert_eq!(keys(index.nearest(&query, &[], 2, 0, 0.0, Some(&prescan))), [2, 3]);
    }

    #[test]
    fn lead_cosine_is_the_cover_of_the_candidates_first_chunk_alone() {
        let mut index = SemanticIndex::new();
        let mut article = unit(&[1.0, 0.0, 0.0]);
        article.vectors.extend(unit(&[0.0, 1.0, 0.0]).vectors);
        index.insert(1, 0, &article, vec![1]);
        // A two-chunk post: one chunk like the article's opening, one like its second part.
        let mut post = unit(&[0.8, 0.6, 0.0]);
        post.vectors.extend(unit(&[0.0, 1.0, 0.0]).vectors);
        let evidence = index.evidence(1, &post, &[1]).expect("in the window");
        assert!((evidence.cosine - 0.9).abs() < 1e-5, "best chunks: (0.8 + 1) / 2");
        assert!((evidence.lead_cosine - 0.4).abs() < 1e-5, "first chunk only: (0.8 + 0) / 2");
    }

    #[test]
    fn a_long_post_is_close_only_to_what_covers_all_of_it() {
        let mut index = SemanticIndex::new();
        // One part of the story, then the whole story in two parts.
        index.insert(1, 0, &unit(&[1.0, 0.0, 0.0]), vec![1]);
        let mut whole = unit(&[1.0, 0.0, 0.0]);
        whole.vectors.extend(unit(&[0.0, 1.0, 0.0]).vectors);
        index.insert(2, 1, &whole, vec![1]);
        let mut query = unit(&[1.0, 0.0, 0.0]);
        query.vectors.extend(unit(&[0.0, 0.8, 0.6]).vectors);
        let found = index.nearest(&query, &[1], 5, 0, 0.0, None);
        assert_eq!(found.iter().map(|n| n.key).collect::<Vec<_>>(), [2, 1]);
        assert!((found[0].evidence.cosine - 0.9).abs() < 1e-5, "(1 + 0.8) / 2");
        assert!((found[1].evidence.cosine - 0.5).abs() < 1e-5, "(1 + 0) / 2: half of it is not there");
    }

    #[test]
    fn evidence_against_one_post_until_it_is_evicted() {
        let mut index = SemanticIndex::new();
        index.insert(7, 0, &unit(&[1.0, 0.0]), vec![1, 2]);
        index.insert(9, 5_000, &unit(&[0.0, 1.0]), vec![3]);
        let evidence = index.evidence(7, &unit(&[0.6, 0.8]), &[1, 3]).expect("in the window");
        assert!((evidence.cosine - 0.6).abs() < 1e-5);
        assert!(evidence.word_overlap > 0.0 && evidence.word_overlap < 1.0);
        assert_eq!(index.evict_before(1_000), 1);
        assert!(!index.contains(7) && index.contains(9));
        assert_eq!(index.evidence(7, &unit(&[0.6, 0.8]), &[1]), None);
        assert!(index.evidence(9, &unit(&[0.6, 0.8]), &[1]).is_some());
    }

    #[test]
    fn rare_words_weigh_more_in_the_overlap() {
        let mut index = SemanticIndex::new();
        for key in 0..10 {
            index.insert(key, key as i64, &unit(&[1.0, 0.0]), if key == 0 { vec![7, 8] } else { vec![7] });
        }
        // Word 7 is in every post, word 8 in one: sharing only 8 says more than sharing only 7.
        assert!(index.word_overlap(&[7, 8], &[8]) > index.word_overlap(&[7, 8], &[7]));
    }

    #[test]
    fn eviction_forgets_old_posts_and_compacts() {
        let mut index = SemanticIndex::new();
        for key in 0..100u64 {
            index.insert(key, key as i64 * 1000, &unit(&[1.0, key as f32]), vec![key]);
        }
        assert_eq!(index.evict_before(60_000), 60);
        assert_eq!(index.len(), 40);
        assert!(index.vectors.len() <= 40 * 2);
        let found = index.nearest(&unit(&[1.0, 99.0]), &[], 1, 0, 0.0, None);
        assert_eq!(found[0].key, 99);
        assert!(!index.postings.contains_key(&3));
    }

    #[test]
    fn posts_sharing_rare_words_are_candidates_beside_the_nearest_by_cosine() {
        let mut index = SemanticIndex::new();
        // Ten posts close to the query by cosine, sharing only a common word with it; then the
        // source, further by cosine but holding the query's rare words 100 and 101.
        for key in 0..10u64 {
            index.insert(key, key as i64, &unit(&[1.0, 0.1 * key as f32, 0.0]), vec![1]);
        }
        index.insert(10, 10, &unit(&[0.5, 0.0, 1.0]), vec![1, 100, 101]);
        let query = unit(&[1.0, 0.0, 0.1]);
        let dense_only: Vec<NodeKey> =
            index.nearest(&query, &[1, 100, 101], 3, 0, 0.3, None).iter().map(|n| n.key).collect();
        assert!(!dense_only.contains(&10), "three nearest by cosine: {dense_only:?}");
        let both = index.nearest(&query, &[1, 100, 101], 3, 1, 0.3, None);
        assert_eq!(both.len(), 4);
        let source = both.iter().find(|n| n.key == 10).expect("found by its words");
        assert!(source.evidence.word_overlap > 0.9, "it holds nearly all of the query's weight");
        assert!(both.windows(2).all(|pair| pair[0].evidence.cosine >= pair[1].evidence.cosine), "best cosine first");
        // Words-only candidates still need the smallest cosine.
        assert!(index.nearest(&query, &[1, 100, 101], 3, 1, 0.9, None).iter().all(|n| n.key != 10));
    }

    #[test]
    fn evicted_posts_leave_the_postings_and_are_never_lexical_candidates() {
        let mut index = SemanticIndex::new();
        for key in 0..20u64 {
            index.insert(key, key as i64 * 1000, &unit(&[1.0, key as f32]), vec![5, 1000 + key % 4]);
        }
        assert_eq!(index.evict_before(12_000), 12);
        // The postings are the window's document frequencies: word 5 in all 8 posts left, and each
        // of the others in the 2 of them that hold it.
        assert_eq!(index.postings[&5].len(), 8);
        assert!((1000..1004).all(|word| index.postings[&word].len() == 2));
        assert_eq!(index.postings.values().map(VecDeque::len).sum::<usize>(), 16);
        let found: Vec<NodeKey> =
            index.nearest(&unit(&[0.0, 1.0]), &[1001], 0, 5, -1.0, None).iter().map(|n| n.key).collect();
        assert_eq!(found, [17, 13], "the live holders of word 1001, best cosine first");
    }

    #[test]
    fn the_bound_evicts_the_oldest_first() {
        let mut index = SemanticIndex::new();
        for key in 0..10u64 {
            index.insert(key, key as i64, &unit(&[1.0, key as f32]), vec![key]);
        }
        assert_eq!(index.evict_beyond(4), 6);
        assert_eq!(index.len(), 4);
        assert!(!index.contains(5) && index.contains(6) && index.contains(9));
        assert_eq!(index.evict_beyond(4), 0);
    }
}
