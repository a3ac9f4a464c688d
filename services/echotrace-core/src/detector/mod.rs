//! The detect stage: one prepared post in, one [`Detection`] out.
//!
//! [`Detector::process_prepared`] takes a post that the stateless stage has prepared
//! ([`crate::prepare`]: normalized, fingerprinted, its URLs and content words found), asks the
//! link stage's indexes ([`crate::link`]) what it may derive from, chooses its parent and places
//! it in the cascade graph, one module each:
//!
//! - `candidates`: the parents the post names (repost, quote, reply), the candidates a lexical
//!   answer gives, and the rules that choose among every linker's candidates (precedence, bridges
//!   into other cascades);
//! - `sharded_window`: the lexical window split into linking shards by lookup key
//!   (`link_shards` > 1, [`crate::link::lexical_shard`]), each answering every post, the answers
//!   merged and resolved to live nodes;
//! - `meaning`: when nothing lexical explains the post and its embedding is given, the best
//!   paraphrase or summary parent by meaning;
//! - [`graph`]: the cascade graph: nodes, primary parents, generations, merges, eviction;
//! - placement, here in `mod.rs` because it writes every index: the post goes into the
//!   [`CascadeGraph`] under its primary parent, its bridges merge cascades, it enters the indexes
//!   under its keys, and every row it produced is returned; eviction by event time and by the
//!   window's bound ([`Detector::process_prepared`] runs it first) is here for the same reason.
//!
//! It is deterministic: the same stream (and embeddings) gives the same output, whether it comes
//! from Kafka or a file, one post at a time or in batches ([`Detector::process_batch`]).
//!
//! Embeddings cost milliseconds where everything else costs microseconds, so the caller asks
//! [`Detector::embedding_key`] first: only posts that nothing lexical explains are embedded, and
//! identical normalized texts share one embedding.
//!
//! All state (indexes and graph) lives in the [`Detector`], behind one value, so it can be
//! snapshotted with the consumer offsets that produced it ([`crate::state`]).

mod candidates;
pub mod graph;
mod meaning;
mod sharded_window;

pub use meaning::{RankedCandidate, SemanticChoice};

use crate::clock::{EventClock, Timeliness};
use crate::link::lexical::{LexicalAnswer, LexicalIndexes, LinkProbe};
use crate::link::semantic::{SemanticConfig, TextEmbedding};
use crate::link::semantic_shards::{ScanLimits, SemanticWindow, WindowPrescan};
use crate::link::shard::LinkShard;
use crate::post::Post;
use crate::prepare::fingerprint::FINGERPRINT_VERSION;
use crate::prepare::normalize::NormalizedText;
use crate::prepare::{PreparedPost, Preparer};
use crate::records::{CascadeRecord, EdgeKind, EdgeRecord, MergeRecord, PostInput, PostRecord};
use crate::score::features::account_looks_automated;
use crate::stage::Stage;
use candidates::{Candidate, Child, bridging_edges, by_precedence, lexical_candidates, millis_to_time};
use chrono::{DateTime, Duration, Utc};
use graph::{CascadeGraph, NodeFacts};
use meaning::{MeaningLinker, MeaningQuery};
use serde::{Deserialize, Serialize};
use sharded_window::ShardedWindow;
use std::num::NonZeroU32;

/// Tuning of the detector. Every field has a default that the docs explain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Largest Hamming distance between simhashes that counts as a near-duplicate.
    pub max_hamming: u32,
    /// Texts with fewer fingerprint features than this are too short to link by similarity alone.
    pub min_features: u32,
    /// Smallest estimated Jaccard similarity for a MinHash LSH match to count as a near-duplicate.
    pub min_jaccard: f32,
    /// Largest simhash distance for a MinHash LSH match to count as a near-duplicate.
    pub max_similar_hamming: u32,
    /// How long posts stay linkable, in seconds of event time.
    pub window_secs: u64,
    /// The most posts the window holds, whatever their time: past it the oldest leave before
    /// `window_secs` would evict them (counted in [`DetectorStats::evicted_early`]). What bounds
    /// the detector's memory when the rate jumps.
    pub max_window_posts: usize,
    /// How far a post's `created_at` may lie past its message's arrival (the Kafka timestamp)
    /// and still move event time to it; a post dated further ahead moves it only that far
    /// ([`crate::clock`]).
    pub max_event_time_lead_secs: u64,
    /// How far behind event time a post may be before it is counted late (still linked to what
    /// the window holds, and stored); past `window_secs` nothing is left to link it to.
    pub allowed_lateness_secs: u64,
    /// Whether posts sharing a canonical URL are linked.
    pub link_shared_urls: bool,
    /// Linking shards the lexical window is split into, by lookup key
    /// ([`crate::link::lexical_shard::LexicalShard`]): 1 keeps one window; more hold the shards in
    /// this process and let them answer a batch side by side, the same links either way (but for
    /// the exceptions `detector::sharded_window` names).
    pub link_shards: NonZeroU32,
    /// Paraphrase and summary linking by sentence embedding.
    pub semantic: SemanticConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            max_hamming: 3,
            min_features: 5,
            min_jaccard: 0.6,
            max_similar_hamming: 12,
            window_secs: 6 * 3600,
            max_window_posts: MAX_WINDOW_POSTS,
            max_event_time_lead_secs: 300,
            allowed_lateness_secs: 6 * 3600,
            link_shared_urls: true,
            link_shards: NonZeroU32::MIN,
            semantic: SemanticConfig::default(),
        }
    }
}

impl DetectorConfig {
    /// A new event clock with this configuration's lead and lateness.
    pub(crate) fn event_clock(&self) -> EventClock {
        EventClock::new(
            Duration::seconds(self.max_event_time_lead_secs as i64).num_milliseconds(),
            Duration::seconds(self.allowed_lateness_secs as i64).num_milliseconds(),
        )
    }
}

/// The cutoff to evict the window below now, if event time has moved it on by 1% of the window
/// since the last one (`evicted_to_ms`, which it advances): the detector and every linking shard
/// evict at the same cutoffs.
pub(crate) fn eviction_cutoff(config: &DetectorConfig, clock: &EventClock, evicted_to_ms: &mut i64) -> Option<i64> {
    let window_ms = Duration::seconds(config.window_secs as i64).num_milliseconds();
    let cutoff = clock.now_ms().saturating_sub(window_ms);
    (cutoff > evicted_to_ms.saturating_add(window_ms / 100)).then(|| {
        *evicted_to_ms = cutoff;
        cutoff
    })
}

/// The key that identifies a normalized text's embedding ([`Detector::embedding_key`]).
pub fn text_key(normalized: &NormalizedText) -> u64 {
    xxhash_rust::xxh3::xxh3_64(normalized.joined().as_bytes())
}

/// Everything one new post produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The post's row.
    pub post: PostRecord,
    /// Its evidence edges; the primary one first.
    pub edges: Vec<EdgeRecord>,
    /// Cascade merges it caused.
    pub merges: Vec<MergeRecord>,
    /// Its cascade's state after it.
    pub cascade: CascadeRecord,
    /// Event time after it ([`crate::clock`]): what the scorer's windows slide on.
    pub event_time: DateTime<Utc>,
}

/// The default bound on the window ([`DetectorConfig::max_window_posts`]): 6 hours at about 45
/// posts a second. About 5 GB at the bound when every post is a cascade of its own, with the
/// scorer's share (`benches/README.md`, "Floods").
pub const MAX_WINDOW_POSTS: usize = 1_000_000;

/// Counters of what the detector has seen, for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    /// Posts processed.
    pub posts: u64,
    /// Posts dropped as duplicates of an already processed id.
    pub duplicates: u64,
    /// Edges emitted, by kind, in [`EdgeKind::ALL`] order.
    pub edges_by_kind: [u64; EdgeKind::ALL.len()],
    /// Cascade merges.
    pub merges: u64,
    /// Posts that came later than the allowed lateness behind event time.
    pub late: u64,
    /// Posts dated further past their arrival than the allowed lead (event time did not follow).
    pub ahead: u64,
    /// Posts that left the window before their time because it held `max_window_posts`.
    pub evicted_early: u64,
}

/// One post of a batch for [`Detector::process_batch`].
#[derive(Debug, Clone)]
pub struct BatchPost<'a> {
    /// The post, prepared.
    pub prepared: PreparedPost,
    /// Its embedding, if it was embedded ([`Detector::embedding_key`]).
    pub embedding: Option<&'a TextEmbedding>,
    /// When its message arrived (its Kafka timestamp), if it came from Kafka.
    pub arrived_at: Option<DateTime<Utc>>,
}

/// The lexical window: held whole, or split into linking shards.
#[derive(Clone, Serialize, Deserialize)]
enum LexicalWindow {
    Whole(LexicalIndexes),
    Sharded(ShardedWindow),
}

impl LexicalWindow {
    /// What the window holds under a post's keys now, changing nothing.
    fn lookup(&self, probe: &LinkProbe, config: &DetectorConfig) -> LexicalAnswer {
        match self {
            LexicalWindow::Whole(indexes) => indexes.answer(probe, config),
            LexicalWindow::Sharded(window) => window.lookup(probe),
        }
    }
}

/// The detector: indexes, graph and configuration. Its fields are serialized in this order into
/// snapshots ([`crate::state::SNAPSHOT_FORMAT`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct Detector {
    config: DetectorConfig,
    lexical: LexicalWindow,
    embedded: SemanticWindow,
    graph: CascadeGraph,
    clock: EventClock,
    evicted_to_ms: i64,
    stats: DetectorStats,
}

impl Detector {
    /// A detector with empty state.
    pub fn new(config: DetectorConfig) -> Detector {
        let lexical = match config.link_shards.get() {
            1 => LexicalWindow::Whole(LexicalIndexes::new(config.max_hamming, LinkShard::WHOLE)),
            count => LexicalWindow::Sharded(ShardedWindow::new(&config, count)),
        };
        Detector {
            lexical,
            embedded: SemanticWindow::new(config.semantic.shards),
            graph: CascadeGraph::default(),
            clock: config.event_clock(),
            evicted_to_ms: i64::MIN,
            stats: DetectorStats::default(),
            config,
        }
    }

    /// A detector whose linking shards run elsewhere, as the staged deployment's `link` stage: it
    /// holds the graph and the semantic window, and takes batches with the shards' answers
    /// ([`Detector::process_answered`]).
    pub fn answered_elsewhere(config: DetectorConfig) -> Detector {
        Detector { lexical: LexicalWindow::Sharded(ShardedWindow::answered_elsewhere()), ..Detector::new(config) }
    }

    /// Whether its linking shards run elsewhere ([`Detector::answered_elsewhere`]).
    pub fn answers_elsewhere(&self) -> bool {
        matches!(&self.lexical, LexicalWindow::Sharded(window) if window.answers_elsewhere())
    }

    /// What the linking shards are sent of each post of a batch, in order.
    pub fn probes<'a>(&self, batch: impl IntoIterator<Item = &'a PreparedPost>) -> Vec<LinkProbe> {
        batch.into_iter().map(|prepared| LinkProbe::of(prepared, &self.config)).collect()
    }

    /// The graph, for queries.
    pub fn graph(&self) -> &CascadeGraph {
        &self.graph
    }

    /// What the detector has counted so far.
    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// Posts in the lexical window: fingerprints in the near-duplicate tables of a whole window,
    /// the placed posts whose matches a sharded one can resolve.
    pub fn window_len(&self) -> usize {
        match &self.lexical {
            LexicalWindow::Whole(indexes) => indexes.len(),
            LexicalWindow::Sharded(window) => window.len(),
        }
    }

    /// Embedded posts in the semantic window.
    pub fn semantic_window_len(&self) -> usize {
        self.embedded.len()
    }

    /// Whether a post with this id was processed (and is still in the window).
    pub fn has_processed(&self, id: &str) -> bool {
        self.graph.key_of(id).and_then(|key| self.graph.node(key)).is_some_and(|node| node.seen)
    }

    /// Whether `post` should be embedded before it is processed: its key
    /// ([`PreparedPost::embedding_key`]) when it may be linked by meaning and nothing lexical (a
    /// shared URL, a near-duplicate) explains it now. Identical texts share one key, so they can
    /// share one embedding.
    ///
    /// Later posts only add to the indexes, so a post explained now is explained when processed.
    pub fn embedding_key(&self, prepared: &PreparedPost) -> Option<u64> {
        let key = prepared.embedding_key?;
        if self.has_processed(&prepared.post.id) || self.explained_lexically(prepared) {
            return None;
        }
        Some(key)
    }

    /// Whether a candidate by words could be the parent of `prepared` now.
    fn explained_lexically(&self, prepared: &PreparedPost) -> bool {
        let answer = self.lexical.lookup(&LinkProbe::of(prepared, &self.config), &self.config);
        let created_at_ms = prepared.post.created_at.timestamp_millis();
        self.lexical_candidates(prepared, &answer).iter().any(|c| c.may_be_parent_of(created_at_ms))
    }

    /// The candidates an answer of the lexical window gives `prepared`: its matches on posts
    /// whose nodes are live.
    fn lexical_candidates(&self, prepared: &PreparedPost, answer: &LexicalAnswer) -> Vec<Candidate> {
        let graph = &self.graph;
        match &self.lexical {
            LexicalWindow::Whole(_) => lexical_candidates(answer, prepared, |key, _| graph.node(key).map(|_| key)),
            LexicalWindow::Sharded(window) => lexical_candidates(answer, prepared, |post_key, created_at_ms| {
                window.resolve(graph, post_key, created_at_ms)
            }),
        }
    }

    /// The stateless stage this detector's posts go through first ([`crate::prepare`]).
    pub fn preparer(&self) -> Preparer {
        Preparer::new(&self.config)
    }

    /// Prepares and processes one post without an embedding. Returns `None` when a post with the
    /// same id was already processed.
    pub fn process(&mut self, post: Post) -> Option<Detection> {
        self.process_embedded(post, None)
    }

    /// Prepares and processes one post with its embedding, read without an arrival time. For
    /// tools and tests that take posts one at a time; the pipeline prepares whole batches.
    pub fn process_embedded(&mut self, post: Post, embedding: Option<&TextEmbedding>) -> Option<Detection> {
        let prepared = self.preparer().prepare(post);
        self.process_prepared(prepared, embedding, None)
    }

    /// Processes one prepared post with its embedding, if it was embedded (see
    /// [`Detector::embedding_key`]), whose message arrived at `arrived_at` (its Kafka timestamp,
    /// which bounds how far the post can move event time, [`crate::clock`]; `None` when read from
    /// a file). Returns `None` when a post with the same id was already processed.
    pub fn process_prepared(
        &mut self,
        prepared: PreparedPost,
        embedding: Option<&TextEmbedding>,
        arrived_at: Option<DateTime<Utc>>,
    ) -> Option<Detection> {
        self.process_scanned(prepared, embedding.map(|embedding| (embedding, None)), arrived_at, None)
    }

    /// Processes a batch of prepared posts in order, as [`Detector::process_prepared`] does one
    /// by one, with the same result: the first pass of the semantic scan for every embedded post
    /// runs first, against the window as it stands, split over at most `threads` threads; each
    /// post's scan is finished when it is linked, over what entered the window since. Linking
    /// shards answer the whole batch first, side by side on the same threads.
    pub fn process_batch(&mut self, batch: Vec<BatchPost>, threads: usize) -> Vec<Option<Detection>> {
        let answers = match &mut self.lexical {
            LexicalWindow::Whole(_) => Vec::new(),
            LexicalWindow::Sharded(window) => {
                let config = &self.config;
                let probes: Vec<_> =
                    batch.iter().map(|post| (LinkProbe::of(&post.prepared, config), post.arrived_at)).collect();
                window.answer_batch(&probes, threads)
            }
        };
        self.process_answered(batch, answers, threads)
    }

    /// Processes a batch as [`Detector::process_batch`] does, with the linking shards' merged
    /// answer to each post ([`LexicalAnswer::merged`]) given in order, by shards that took the
    /// batch's [`Detector::probes`] elsewhere (the `link` stage). Answers are ignored by a
    /// detector that holds its window whole.
    ///
    /// # Panics
    /// When a detector whose shards run elsewhere is not given an answer for every post.
    pub fn process_answered(
        &mut self,
        batch: Vec<BatchPost>,
        answers: Vec<LexicalAnswer>,
        threads: usize,
    ) -> Vec<Option<Detection>> {
        assert!(
            !self.answers_elsewhere() || answers.len() == batch.len(),
            "the linking shards answered {} posts of a batch of {}",
            answers.len(),
            batch.len()
        );
        let mut answers = answers.into_iter();
        let config = &self.config.semantic;
        // One prescan per embedded post, consumed in the same order below.
        let embedded: Vec<&TextEmbedding> = batch.iter().filter_map(|post| post.embedding).collect();
        let mut prescans = if config.enabled && threads > 1 && embedded.len() > 1 {
            self.embedded.prescan_all(&embedded, ScanLimits::of(config), threads)
        } else {
            vec![None; embedded.len()]
        }
        .into_iter();
        let mut detections = Vec::with_capacity(batch.len());
        for BatchPost { prepared, embedding, arrived_at } in batch {
            let embedded = embedding.map(|embedding| (embedding, prescans.next().flatten()));
            detections.push(self.process_scanned(prepared, embedded, arrived_at, answers.next()));
        }
        detections
    }

    /// [`Detector::process_prepared`] with the first pass of the post's semantic scan, when it was
    /// done ahead, and the linking shards' answer, when they gave it ahead.
    fn process_scanned(
        &mut self,
        prepared: PreparedPost,
        embedded: Option<(&TextEmbedding, Option<WindowPrescan>)>,
        arrived_at: Option<DateTime<Utc>>,
        answered: Option<LexicalAnswer>,
    ) -> Option<Detection> {
        let probe = LinkProbe::of(&prepared, &self.config);
        // Linking shards take every post of the stream, duplicates too, as a linking stage does.
        let answered = match &mut self.lexical {
            LexicalWindow::Sharded(window) => Some(answered.unwrap_or_else(|| {
                assert!(
                    !window.answers_elsewhere(),
                    "a detector whose linking shards run elsewhere takes answered batches"
                );
                window.answer(&probe, arrived_at)
            })),
            LexicalWindow::Whole(_) => None,
        };
        if self.has_processed(&prepared.post.id) {
            self.stats.duplicates += 1;
            return None;
        }
        let created_at_ms = prepared.post.created_at.timestamp_millis();
        match self.clock.observe(created_at_ms, arrived_at.map(|time| time.timestamp_millis())) {
            Timeliness::OnTime => {}
            Timeliness::Late => self.stats.late += 1,
            Timeliness::Ahead => self.stats.ahead += 1,
        }
        self.evict();

        // The candidates: named parents, then by words, then, for what nothing lexical explains,
        // by meaning.
        let mut candidates = Candidate::explicit(&mut self.graph, &prepared.post);
        let answer = answered.unwrap_or_else(|| self.lexical.lookup(&probe, &self.config));
        candidates.extend(self.lexical_candidates(&prepared, &answer));
        let embedded = embedded
            .filter(|_| self.config.semantic.enabled && !candidates.iter().any(|c| c.may_be_parent_of(created_at_ms)));
        if let Some((embedding, prescan)) = &embedded {
            let query =
                MeaningQuery { embedding, words: &prepared.content_words, created_at_ms, prescan: prescan.as_ref() };
            candidates.extend(self.meaning().candidate(&query));
        }

        // The choice: the first candidate by precedence that may be its parent; the best one
        // into each other cascade bridges it (decided before the post merges them).
        let candidates = by_precedence(candidates);
        let primary_index = candidates.iter().position(|c| c.may_be_parent_of(created_at_ms));
        let bridges = bridging_edges(&self.graph, &candidates, primary_index, created_at_ms);

        // The placement, then the post enters the indexes under its keys.
        let post = &prepared.post;
        let parent_evidence = primary_index.map(|i| candidates[i].in_words()).unwrap_or_default();
        let placement = self.graph.add_post(
            NodeFacts {
                post_id: &post.id,
                platform: &post.platform,
                author_handle: &post.author.handle,
                text: &post.text,
                created_at: post.created_at,
                automated_account: account_looks_automated(
                    post.author.declared_automated.unwrap_or(false),
                    post.author.created_at,
                    post.created_at,
                ),
                account_created_at: post.author.created_at,
                parent_evidence: &parent_evidence,
            },
            primary_index.map(|i| (candidates[i].parent, candidates[i].kind)),
            bridges.iter().map(|(_, bridge)| *bridge).collect(),
        );
        let key = placement.key;
        match &mut self.lexical {
            LexicalWindow::Whole(indexes) => indexes.insert(key, &probe),
            LexicalWindow::Sharded(window) => window.placed(probe.post_key, key),
        }
        let PreparedPost { post, fingerprint, content_words, .. } = prepared;
        if let Some((embedding, _)) = embedded {
            self.embedded.insert(key, created_at_ms, embedding, content_words);
            self.embedded.evict_beyond(self.config.semantic.max_window_posts);
        }

        // The rows: the primary edge first, then the bridges.
        let child = Child { post_id: &post.id, created_at: post.created_at, cascade_id: &placement.cascade_id };
        let primary_edge = primary_index.map(|i| candidates[i].edge(&self.graph, &child, true, false));
        let (parent_id, parent_kind) = match &primary_edge {
            Some(edge) => (Some(edge.parent_id.clone()), Some(edge.kind)),
            None => (None, None),
        };
        let edges: Vec<EdgeRecord> = primary_edge
            .into_iter()
            .chain(
                bridges
                    .iter()
                    .map(|(i, bridge)| candidates[*i].edge(&self.graph, &child, false, bridge.other_is_later)),
            )
            .collect();
        self.count(&edges, placement.merges.len());

        let cascade = self.graph.cascade_record_of(key).expect("placed node has a cascade");
        Some(Detection {
            post: PostRecord {
                post_id: post.id,
                platform: post.platform,
                author_id: post.author.id,
                author_handle: post.author.handle,
                created_at: post.created_at,
                text: post.text,
                lang: post.lang,
                cascade_id: placement.cascade_id,
                parent_id,
                parent_kind,
                generation: placement.generation,
                summary_depth: placement.summary_depth,
                simhash: fingerprint.simhash,
                fingerprint_version: FINGERPRINT_VERSION,
                input: PostInput {
                    author_created_at: post.author.created_at,
                    author_followers: post.author.followers,
                    author_declared_automated: post.author.declared_automated,
                    urls: post.urls,
                    mentions: post.mentions,
                    repost_of: post.repost_of,
                    quote_of: post.quote_of,
                    reply_to: post.reply_to,
                },
            },
            edges,
            merges: placement.merges,
            cascade,
            event_time: millis_to_time(self.clock.now_ms()),
        })
    }

    /// The semantic window and the graph as the meaning stage reads them.
    fn meaning(&self) -> MeaningLinker<'_> {
        MeaningLinker { config: &self.config.semantic, index: &self.embedded, graph: &self.graph }
    }

    /// The best candidate by meaning for a post that nothing lexical explains, with the evidence
    /// that decides it, as [`Detector::process_prepared`] would weigh it now; `None` when no
    /// candidate reaches `min_cosine`. For tools that fit and audit the decision.
    pub fn explain_semantic(&self, prepared: &PreparedPost, embedding: &TextEmbedding) -> Option<SemanticChoice> {
        self.meaning().choice(&MeaningQuery::of(prepared, embedding))
    }

    /// Every candidate by meaning that [`Detector::process_prepared`] would rank for a post now,
    /// best first. For tools that measure how often the source is among them (`relink
    /// --candidates`).
    pub fn semantic_candidates(&self, prepared: &PreparedPost, embedding: &TextEmbedding) -> Vec<RankedCandidate> {
        self.meaning()
            .ranked(&MeaningQuery::of(prepared, embedding))
            .into_iter()
            .map(|(rank, neighbour)| RankedCandidate { rank, neighbour, cascade: self.graph.cascade_of(neighbour.key) })
            .collect()
    }

    fn count(&mut self, edges: &[EdgeRecord], merges: usize) {
        self.stats.posts += 1;
        self.stats.merges += merges as u64;
        for edge in edges {
            let index = EdgeKind::ALL.iter().position(|&k| k == edge.kind).expect("every kind is listed");
            self.stats.edges_by_kind[index] += 1;
        }
    }

    /// Evicts what event time has moved out of the window (in steps of 1% of it), then, when the
    /// window holds `max_window_posts`, its oldest arrivals (down to 99% of the bound, leaving room
    /// for the post at hand and a placeholder it may add).
    fn evict(&mut self) {
        if let Some(cutoff) = eviction_cutoff(&self.config, &self.clock, &mut self.evicted_to_ms) {
            // Linking shards evict themselves at the same cutoffs, by their own clocks.
            if let LexicalWindow::Whole(indexes) = &mut self.lexical {
                indexes.evict_before(cutoff);
            }
            self.embedded.evict_before(cutoff);
            self.graph.evict_before(cutoff);
        }
        let bound = self.config.max_window_posts.max(2);
        if self.graph.len() + 2 > bound {
            let excess = self.graph.len() + 2 - bound + bound / 100;
            let before = self.graph.len();
            let first_kept = self.graph.evict_oldest(excess);
            if let LexicalWindow::Whole(indexes) = &mut self.lexical {
                indexes.evict_payloads_below(first_kept);
            }
            self.embedded.evict_keys_below(first_kept);
            self.stats.evicted_early += (before - self.graph.len()) as u64;
        }
        if let LexicalWindow::Sharded(window) = &mut self.lexical {
            window.forget_evicted(&self.graph);
        }
    }
}

/// What the detector counts, with the sizes of what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorMetrics {
    /// Its counters.
    pub stats: DetectorStats,
    /// Posts in the lexical window ([`Detector::window_len`]).
    pub window_posts: usize,
    /// Embedded posts in the semantic window.
    pub semantic_window_posts: usize,
    /// Cascades in the graph.
    pub cascades_live: usize,
}

impl Stage for Detector {
    type Config = DetectorConfig;
    type Input<'a> = BatchPost<'a>;
    type Output = Option<Detection>;
    type State = Detector;
    type Metrics = DetectorMetrics;

    fn empty(config: &DetectorConfig) -> Detector {
        Detector::new(config.clone())
    }

    /// [`Detector::process_batch`]: `None` for a post whose id was processed already.
    fn process(&mut self, batch: Vec<BatchPost<'_>>, threads: usize) -> Vec<Option<Detection>> {
        self.process_batch(batch, threads)
    }

    fn state(&self) -> &Detector {
        self
    }

    fn restore(_: &DetectorConfig, state: Detector) -> Detector {
        state
    }

    fn metrics(&self) -> DetectorMetrics {
        DetectorMetrics {
            stats: self.stats(),
            window_posts: self.window_len(),
            semantic_window_posts: self.semantic_window_len(),
            cascades_live: self.graph().cascade_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, minute: u32, text: &str, extra: &str) -> Post {
        let json = format!(
            r#"{{"id":"{id}","platform":"{}","author":{{"id":"a-{id}","handle":"h"}},"created_at":"2026-11-01T09:{minute:02}:00Z","text":"{text}"{extra}}}"#,
            id.split(':').next().unwrap()
        );
        Post::from_json(json.as_bytes()).unwrap()
    }

    const CLAIM: &str = "maintainer dana whitlock secretly rejected the safety patches for the parser library";

    /// The embedding key the detector gives a post now.
    fn key_of(detector: &Detector, post: Post) -> Option<u64> {
        detector.embedding_key(&detector.preparer().prepare(post))
    }

    /// Processes a post, without an embedding, that arrived at `arrived_at`.
    fn arrived(detector: &mut Detector, post: Post, arrived_at: Option<DateTime<Utc>>) -> Option<Detection> {
        let prepared = detector.preparer().prepare(post);
        detector.process_prepared(prepared, None, arrived_at)
    }

    #[test]
    fn explicit_links_win_over_similarity() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process(post("x:1", 0, CLAIM, "")).unwrap();
        detector.process(post("x:2", 1, "something else entirely about lunch plans today", "")).unwrap();
        let quote = detector.process(post("bluesky:3", 2, CLAIM, r#","quote_of":"x:2""#)).unwrap();
        assert_eq!(quote.post.parent_id.as_deref(), Some("x:2"));
        assert_eq!(quote.post.parent_kind, Some(EdgeKind::Quote));
        // The near-duplicate of x:1 is kept as a bridge and merges the two cascades.
        assert_eq!(quote.edges.len(), 2);
        assert_eq!(quote.edges[1].kind, EdgeKind::NearDuplicate);
        assert_eq!(quote.merges.len(), 1);
        assert_eq!(quote.cascade.root_post_id, "x:1", "the earlier cascade survives");
        assert_eq!(quote.cascade.size, 3);
        assert_eq!(detector.graph().cascade_count(), 1);
    }

    #[test]
    fn light_edits_link_with_generations() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process(post("x:1", 0, CLAIM, "")).unwrap();
        let copy = detector.process(post("mastodon:2", 1, &format!("BREAKING: {CLAIM} #opensource"), "")).unwrap();
        assert_eq!(copy.post.parent_id.as_deref(), Some("x:1"));
        assert_eq!(copy.post.parent_kind, Some(EdgeKind::NearDuplicate));
        let repost = detector.process(post("mastodon:3", 2, "", r#","repost_of":"mastodon:2""#)).unwrap();
        assert_eq!(repost.post.generation, 2);
        assert_eq!(repost.cascade.platforms, ["mastodon", "x"]);
        assert_eq!(repost.cascade.depth, 2);
    }

    #[test]
    fn a_later_copy_delivered_first_does_not_become_the_parent() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process(post("threads:9", 5, CLAIM, "")).unwrap();
        let original = detector.process(post("x:1", 0, CLAIM, "")).unwrap();
        assert_eq!(original.post.parent_id, None);
        assert_eq!(original.edges[0].child_id, "threads:9", "the edge points from the later post");
        assert_eq!(original.edges[0].time_delta_ms, Some(5 * 60_000));
        assert_eq!(original.cascade.root_post_id, "x:1");
        assert_eq!(original.cascade.size, 2);
    }

    #[test]
    fn an_original_filling_its_placeholder_becomes_the_root_of_the_merged_cascade() {
        let mut detector = Detector::new(DetectorConfig::default());
        // A copy and a repost arrive before the original (three partitions, three speeds).
        detector.process(post("bluesky:5", 5, CLAIM, "")).unwrap();
        detector.process(post("x:6", 6, "", r#","repost_of":"x:1""#)).unwrap();
        let original = detector.process(post("x:1", 0, CLAIM, "")).unwrap();
        assert_eq!(original.cascade.root_post_id, "x:1");
        assert_eq!(original.cascade.size, 3);
        assert_eq!(original.merges[0].absorbed_cascade_id, graph::cascade_id_for("bluesky:5"));
    }

    #[test]
    fn a_chain_of_merges_names_every_absorbed_cascade() {
        const OTHER: &str = "the committee postponed the vote on the harbour bridge until the spring session";
        const THIRD: &str = "volunteers cleared four tonnes of plastic from the northern beaches this weekend";
        let mut detector = Detector::new(DetectorConfig::default());
        for (id, minute, text) in [("x:1", 0, CLAIM), ("x:2", 1, OTHER), ("x:3", 2, THIRD)] {
            detector.process(post(id, minute, text, "")).unwrap();
        }
        // Quotes x:3 and copies x:2: x:3's cascade merges into x:2's.
        let first = detector.process(post("y:4", 3, OTHER, r#","quote_of":"x:3""#)).unwrap();
        let absorbed: Vec<_> = first.merges.iter().map(|m| m.absorbed_cascade_id.as_str()).collect();
        assert_eq!(absorbed, [graph::cascade_id_for("x:3")]);
        // Quotes x:2 and copies x:1: x:2's cascade, holding x:3's, merges into x:1's.
        let second = detector.process(post("y:5", 4, CLAIM, r#","quote_of":"x:2""#)).unwrap();
        let absorbed: Vec<_> = second.merges.iter().map(|m| m.absorbed_cascade_id.as_str()).collect();
        assert_eq!(absorbed, [graph::cascade_id_for("x:2"), graph::cascade_id_for("x:3")]);
        assert!(second.merges.iter().all(|m| m.into_cascade_id == graph::cascade_id_for("x:1")));
        assert_eq!(second.cascade.size, 5);
    }

    #[test]
    fn duplicates_and_placeholders() {
        let mut detector = Detector::new(DetectorConfig::default());
        let reply =
            detector.process(post("x:2", 1, "replying before the original arrives", r#","reply_to":"x:1""#)).unwrap();
        assert_eq!(reply.post.parent_id.as_deref(), Some("x:1"));
        assert_eq!(reply.edges[0].time_delta_ms, None, "the parent has not been seen");
        let original = detector.process(post("x:1", 0, "the original post, arriving late", "")).unwrap();
        assert_eq!(original.cascade.size, 2);
        assert!(detector.process(post("x:1", 0, "the original post, arriving late", "")).is_none());
        assert_eq!(detector.stats().duplicates, 1);
        assert_eq!(detector.graph().lineage("x:2").unwrap().len(), 2);
    }

    #[test]
    fn short_texts_are_not_linked_by_similarity() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process(post("x:1", 0, "so true", "")).unwrap();
        assert_eq!(detector.process(post("x:2", 1, "so true", "")).unwrap().post.parent_id, None);
    }

    #[test]
    fn the_window_evicts_old_posts() {
        let config = DetectorConfig { window_secs: 60, ..DetectorConfig::default() };
        let mut detector = Detector::new(config);
        detector.process(post("x:1", 0, CLAIM, "")).unwrap();
        detector.process(post("x:2", 30, "a later unrelated post moves event time along nicely", "")).unwrap();
        assert_eq!(detector.graph().cascade_count(), 1, "x:1's cascade left the window as x:2 came");
        assert_eq!(detector.process(post("x:3", 31, CLAIM, "")).unwrap().post.parent_id, None);
        assert!(detector.graph().key_of("x:1").is_none());
        assert_eq!(detector.graph().cascade_count(), 2);
    }

    #[test]
    fn the_window_holds_at_most_its_bound_and_counts_what_left_early() {
        let config = DetectorConfig { max_window_posts: 100, ..DetectorConfig::default() };
        let mut detector = Detector::new(config);
        for i in 0..1_000 {
            let text = format!("post number {i} says something of its own about topic {}", i * 7919);
            detector.process(post(&format!("x:{i}"), i / 60, &text, "")).unwrap();
            assert!(detector.graph().len() <= 100, "the window grew past its bound at post {i}");
        }
        assert!(detector.graph().len() >= 97, "the window kept {} posts", detector.graph().len());
        assert_eq!(detector.stats().evicted_early, 1_000 - detector.graph().len() as u64);
        assert!(detector.graph().key_of("x:0").is_none() && detector.graph().key_of("x:999").is_some());
        assert!(detector.window_len() <= 100, "the indexes evicted with the graph");
    }

    #[test]
    fn a_post_dated_ahead_of_its_arrival_evicts_nothing_and_a_late_one_is_counted() {
        let config = DetectorConfig { window_secs: 600, allowed_lateness_secs: 300, ..DetectorConfig::default() };
        let arrival = |minute: u32| Some(post("x:0", minute, "arrival", "").created_at);
        let mut parents = Vec::new();
        for with_arrival in [true, false] {
            let mut detector = Detector::new(config.clone());
            arrived(&mut detector, post("x:1", 0, CLAIM, ""), arrival(0)).unwrap();
            let mut ahead = post("x:2", 1, "a post dated a day ahead of when it arrived", "");
            ahead.created_at += Duration::days(1);
            arrived(&mut detector, ahead, arrival(1).filter(|_| with_arrival)).unwrap();
            let copy = arrived(&mut detector, post("x:3", 2, CLAIM, ""), arrival(2)).unwrap();
            parents.push(copy.post.parent_id);
            if with_arrival {
                assert_eq!((detector.stats().ahead, detector.stats().late), (1, 0));
                let mut late = post("x:4", 2, "a post that arrives an hour after it was written", "");
                late.created_at -= Duration::hours(1);
                assert!(arrived(&mut detector, late, arrival(2)).is_some(), "processed and stored");
                assert_eq!(detector.stats().late, 1);
            }
        }
        assert_eq!(parents, [Some("x:1".to_owned()), None], "without its arrival, the post evicts the window");
    }

    /// A unit vector along `axis`, tilted towards `towards` by `tilt`, in 8 dimensions.
    fn embedding(axis: usize, towards: usize, tilt: f32, tokens: u32) -> TextEmbedding {
        let mut vectors = vec![0.0f32; 8];
        vectors[axis] = 1.0;
        vectors[towards] += tilt;
        let norm = vectors.iter().map(|v| v * v).sum::<f32>().sqrt();
        vectors.iter_mut().for_each(|v| *v /= norm);
        TextEmbedding { vectors, dimension: 8, tokens }
    }

    const ARTICLE: &str = "The harbour authority confirmed the old swing bridge will close for repairs for six weeks from \
        Monday, diverting ferry traffic to the north quay while divers inspect the piers";
    const SUMMARY: &str = "Swing bridge closes six weeks for repairs; ferries diverted to north quay";
    const SUMMARY_OF_SUMMARY: &str = "Bridge repairs: six weeks closed, ferries use the north quay";

    #[test]
    fn a_batch_gives_what_its_posts_give_one_by_one() {
        // Four stories told in words no two posts share, so only meaning links them.
        let posts: Vec<(Post, TextEmbedding)> = (0..28)
            .map(|i| {
                let text = format!("story{i} quay{i} ferry{i} harbour{i} bridge{i} repairs{i} weeks{i}");
                let axis = i % 4;
                (post(&format!("x:{i}"), i as u32, &text, ""), embedding(axis, 4 + axis, 0.05 * (i % 3) as f32, 12))
            })
            .collect();
        let mut one_by_one = Detector::new(DetectorConfig::default());
        let mut batched = Detector::new(DetectorConfig::default());
        let mut expected = Vec::new();
        for (post, embedding) in &posts {
            let prepared = one_by_one.preparer().prepare(post.clone());
            let embedding = one_by_one.embedding_key(&prepared).map(|_| embedding);
            expected.push(one_by_one.process_prepared(prepared, embedding, None));
        }
        let mut got = Vec::new();
        for chunk in posts.chunks(9) {
            let batch = chunk
                .iter()
                .map(|(post, embedding)| {
                    let prepared = batched.preparer().prepare(post.clone());
                    let embedding = batched.embedding_key(&prepared).map(|_| embedding);
                    BatchPost { prepared, embedding, arrived_at: None }
                })
                .collect();
            got.extend(batched.process_batch(batch, 2));
        }
        assert_eq!(got, expected);
        let semantic = expected.iter().flatten().filter(|d| d.edges.iter().any(|e| e.semantic.is_some())).count();
        assert!(semantic >= 5, "posts linked by meaning: {semantic}");
    }

    #[test]
    fn summaries_and_summaries_of_summaries_become_generations_with_their_evidence() {
        let mut detector = Detector::new(DetectorConfig::default());
        let article = post("news:1", 0, ARTICLE, "");
        assert!(key_of(&detector, article.clone()).is_some());
        detector.process_embedded(article, Some(&embedding(0, 1, 0.0, 60))).unwrap();
        // Something unrelated in another cascade, so the margin means something.
        let other = post("news:2", 1, "Local football club signs a new goalkeeper ahead of the derby weekend", "");
        detector.process_embedded(other, Some(&embedding(3, 1, 0.0, 15))).unwrap();

        let summary = detector.process_embedded(post("x:3", 2, SUMMARY, ""), Some(&embedding(0, 1, 0.3, 15))).unwrap();
        assert_eq!(summary.post.parent_id.as_deref(), Some("news:1"));
        assert_eq!(summary.post.parent_kind, Some(EdgeKind::Summary));
        assert_eq!(summary.post.summary_depth, 1);
        let evidence = summary.edges[0].semantic.expect("semantic evidence");
        assert!(evidence.is_summary && (evidence.length_ratio - 0.25).abs() < 1e-6);
        let models = &DetectorConfig::default().semantic;
        assert!(evidence.cosine > 0.95 && evidence.word_overlap > 0.4);
        assert!(evidence.score >= models.summary.min_probability);

        let again = post("threads:4", 3, SUMMARY_OF_SUMMARY, "");
        let again = detector.process_embedded(again, Some(&embedding(0, 1, 0.45, 12))).unwrap();
        assert_eq!(again.post.parent_id.as_deref(), Some("x:3"), "the closest earlier text is the summary");
        assert_eq!(again.post.parent_kind, Some(EdgeKind::Paraphrase));
        let origin_score = again.edges[0].semantic.and_then(|e| e.origin_score).expect("checked against the article");
        assert!(origin_score >= models.summary.min_probability);
        assert_eq!((again.post.generation, again.post.summary_depth), (2, 2));
        assert_eq!(again.cascade.summary_depth, 2);
        assert_eq!(again.cascade.root_post_id, "news:1");
        assert_eq!(detector.stats().edges_by_kind[6], 1);
    }

    #[test]
    fn only_hops_by_automated_looking_accounts_count_towards_automated_summary_depth() {
        let chain = |summary_by_bot: bool, relay_by_fresh_account: bool| {
            let mut detector = Detector::new(DetectorConfig::default());
            detector.process_embedded(post("news:1", 0, ARTICLE, ""), Some(&embedding(0, 1, 0.0, 60))).unwrap();
            let other = post("news:2", 1, "Local football club signs a new goalkeeper ahead of the derby weekend", "");
            detector.process_embedded(other, Some(&embedding(3, 1, 0.0, 15))).unwrap();
            let mut summary = post("x:3", 2, SUMMARY, "");
            summary.author.declared_automated = Some(summary_by_bot);
            detector.process_embedded(summary, Some(&embedding(0, 1, 0.3, 15))).unwrap();
            let mut relay = post("threads:4", 3, SUMMARY_OF_SUMMARY, "");
            // An account created the day before (automation undeclared), or years before.
            let age = if relay_by_fresh_account { Duration::days(1) } else { Duration::days(900) };
            relay.author.created_at = Some(relay.created_at - age);
            let relay = detector.process_embedded(relay, Some(&embedding(0, 1, 0.45, 12))).unwrap();
            assert_eq!(relay.cascade.summary_depth, 2, "every semantic hop counts towards summary_depth");
            relay.cascade.automated_summary_depth
        };
        assert_eq!(chain(false, false), 0, "people summarising the news, then each other");
        assert_eq!(chain(true, false), 1, "one bot round");
        assert_eq!(chain(false, true), 1);
        assert_eq!(chain(true, true), 2, "a bot summarising a bot's summary");
    }

    #[test]
    fn a_summary_of_a_summary_must_also_pass_against_the_origin() {
        let run = |check_origin: bool| {
            let semantic = SemanticConfig { check_origin, ..SemanticConfig::default() };
            let mut detector = Detector::new(DetectorConfig { semantic, ..DetectorConfig::default() });
            detector.process_embedded(post("news:1", 0, ARTICLE, ""), Some(&embedding(0, 1, 0.0, 60))).unwrap();
            let other = post("news:2", 1, "Local football club signs a new goalkeeper ahead of the derby weekend", "");
            detector.process_embedded(other, Some(&embedding(1, 2, 0.6, 60))).unwrap();
            // A loose summary of the article: linked, but it leans away from it.
            let summary = detector.process_embedded(post("x:3", 2, SUMMARY, ""), Some(&embedding(0, 1, 0.7, 15)));
            assert_eq!(summary.unwrap().post.parent_id.as_deref(), Some("news:1"));
            // Close to the summary, far from the article, and about commuters the article never mentions.
            let drift =
                post("threads:4", 3, "Swing bridge closes and commuters are furious about the traffic chaos", "");
            let bent =
                TextEmbedding { vectors: vec![0.342, 0.94, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], dimension: 8, tokens: 12 };
            detector.process_embedded(drift, Some(&bent)).unwrap()
        };
        let unchecked = run(false);
        assert_eq!(unchecked.post.parent_id.as_deref(), Some("x:3"), "the summary alone would take it");
        assert_eq!(run(true).post.parent_id, None, "the article does not explain it");
    }

    #[test]
    fn weak_semantic_evidence_does_not_link() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process_embedded(post("news:1", 0, ARTICLE, ""), Some(&embedding(0, 1, 0.0, 60))).unwrap();
        // Close in meaning, but a different story: no shared words.
        let unrelated = post("x:2", 1, "Council approves new cycle lanes downtown after long public consultation", "");
        let detection = detector.process_embedded(unrelated, Some(&embedding(0, 2, 0.9, 12))).unwrap();
        assert_eq!(detection.post.parent_id, None);
        assert_eq!(detector.semantic_window_len(), 2);
    }

    #[test]
    fn the_semantic_window_holds_at_most_its_bound() {
        let config = DetectorConfig {
            semantic: SemanticConfig { max_window_posts: 1, ..SemanticConfig::default() },
            ..DetectorConfig::default()
        };
        let mut detector = Detector::new(config);
        detector.process_embedded(post("news:1", 0, ARTICLE, ""), Some(&embedding(0, 1, 0.0, 60))).unwrap();
        let other = post("x:2", 1, "Council approves new cycle lanes downtown after long public consultation", "");
        detector.process_embedded(other, Some(&embedding(0, 2, 0.9, 12))).unwrap();
        assert_eq!(detector.semantic_window_len(), 1);
    }

    #[test]
    fn only_what_nothing_lexical_explains_is_embedded() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process(post("x:1", 0, CLAIM, "")).unwrap();
        assert_eq!(key_of(&detector, post("x:2", 1, CLAIM, "")), None, "a near-duplicate");
        assert_eq!(key_of(&detector, post("x:3", 1, "anything at all here", r#","reply_to":"x:1""#)), None);
        assert_eq!(key_of(&detector, post("x:4", 1, "so true", "")), None, "too few words");
        assert_eq!(
            key_of(&detector, post("weibo:8", 1, "继FBI承认罗斯威尔事件是飞碟坠毁后，外星人视频又被曝光", "")),
            None
        );
        let a = key_of(&detector, post("x:5", 1, "Bridge closes for six weeks of repairs!", ""));
        let b = key_of(&detector, post("mastodon:6", 1, "bridge closes for six weeks of repairs", ""));
        assert!(a.is_some() && a == b, "identical normalized texts share a key");
        let off = DetectorConfig {
            semantic: SemanticConfig { enabled: false, ..SemanticConfig::default() },
            ..DetectorConfig::default()
        };
        assert_eq!(key_of(&Detector::new(off), post("x:7", 1, "Bridge closes for six weeks of repairs", "")), None);
    }

    #[test]
    fn a_lexical_parent_wins_and_keeps_the_post_out_of_the_semantic_window() {
        let mut detector = Detector::new(DetectorConfig::default());
        detector.process_embedded(post("x:1", 0, CLAIM, ""), Some(&embedding(0, 1, 0.0, 20))).unwrap();
        // Embedded speculatively in the same batch, but a near-duplicate explains it.
        let copy = detector.process_embedded(post("x:2", 1, CLAIM, ""), Some(&embedding(0, 1, 0.0, 20))).unwrap();
        assert_eq!(copy.post.parent_kind, Some(EdgeKind::NearDuplicate));
        assert_eq!(copy.post.summary_depth, 0);
        assert_eq!(detector.semantic_window_len(), 1);
    }
}
