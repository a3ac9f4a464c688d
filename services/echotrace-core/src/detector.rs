//! The stages wired together: one post in, one [`Detection`] out.
//!
//! [`Detector::process_prepared`] takes a post that the stateless stage has prepared
//! ([`crate::prepare`]: normalized, fingerprinted, its URLs and content words found), gathers
//! candidate parents (explicit ids, shared canonical URLs, near-duplicates), and, when none of them
//! explains the post and its embedding is given, the best paraphrase or summary parent by meaning.
//! It picks the primary parent by precedence (repost > quote > reply > shared URL > near-duplicate >
//! paraphrase > summary; among near-duplicates the closest, then the earliest), places the post in
//! the [`CascadeGraph`] and returns every row it produced. It is deterministic: the same stream
//! (and embeddings) gives the same output, whether it comes from Kafka or a file, one post at a
//! time or in batches ([`Detector::process_batch`]).
//!
//! Embeddings cost milliseconds where everything else costs microseconds, so the caller asks
//! [`Detector::embedding_key`] first: only posts that nothing lexical explains are embedded, and
//! identical normalized texts share one embedding.
//!
//! All state (indexes and graph) lives here, behind one value, so it can be snapshotted with the
//! consumer offsets that produced it.

use crate::clock::{EventClock, Timeliness};
use crate::fingerprint::{FINGERPRINT_VERSION, hamming};
use crate::graph::{Bridge, CascadeGraph, NodeFacts, NodeKey};
use crate::link::minhash::{self, MinHashIndex};
use crate::link::near_dup::NearDupIndex;
use crate::link::semantic::{Neighbour, Prescan, SemanticConfig, SemanticEvidence, SemanticIndex, TextEmbedding};
use crate::link::urls::SharedUrlIndex;
use crate::normalize::NormalizedText;
use crate::post::Post;
use crate::prepare::{PreparedPost, Preparer};
use crate::records::{CascadeRecord, EdgeKind, EdgeRecord, MergeRecord, PostInput, PostRecord};
use crate::score::features::account_looks_automated;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

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
            semantic: SemanticConfig::default(),
        }
    }
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

/// The best candidate by meaning for one post and the evidence that decides it
/// ([`Detector::explain_semantic`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticChoice {
    /// The candidate parent.
    pub parent: NodeKey,
    /// Its event time.
    pub parent_time_ms: i64,
    /// The edge kind its length ratio gives.
    pub kind: EdgeKind,
    /// The evidence against the candidate, weighed.
    pub evidence: SemanticEvidence,
    /// When the candidate was itself linked by meaning: the origin of its chain and the evidence
    /// against it, which must pass too.
    pub origin: Option<(NodeKey, SemanticEvidence)>,
    /// Whether the candidate becomes the parent.
    pub links: bool,
}

/// One candidate by meaning as the detector ranks it ([`Detector::semantic_candidates`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedCandidate {
    /// Its rank score: cosine plus `rank_overlap_weight` times word overlap.
    pub rank: f32,
    /// The candidate and its evidence, before the margin and the decision.
    pub neighbour: Neighbour,
    /// The cascade it is in.
    pub cascade: Option<NodeKey>,
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

/// What the candidates by meaning are looked up with.
struct MeaningQuery<'a> {
    embedding: &'a TextEmbedding,
    words: &'a [u64],
    created_at_ms: i64,
    /// The first pass of the window's scan, done for the whole batch ([`Detector::process_batch`]).
    prescan: Option<&'a Prescan>,
}

impl<'a> MeaningQuery<'a> {
    /// The query for a prepared post with its embedding, without a prescan.
    fn of(prepared: &'a PreparedPost, embedding: &'a TextEmbedding) -> MeaningQuery<'a> {
        let created_at_ms = prepared.post.created_at.timestamp_millis();
        MeaningQuery { embedding, words: &prepared.content_words, created_at_ms, prescan: None }
    }
}

/// A candidate parent found by one of the linkers.
struct Candidate {
    parent: NodeKey,
    kind: EdgeKind,
    /// Within a kind, lower is stronger: simhash distance, or 100 + distance in Jaccard points.
    rank: u32,
    hamming: Option<u32>,
    jaccard: Option<f32>,
    evidence: Option<String>,
    semantic: Option<SemanticEvidence>,
    parent_time_ms: i64,
}

impl Candidate {
    /// The evidence in words, for the people reading a cascade.
    fn in_words(&self) -> String {
        if let Some(semantic) = &self.semantic {
            return format!(
                "meaning: cosine {:.2}, word overlap {:.2}, probability {:.2}",
                semantic.cosine, semantic.word_overlap, semantic.score
            );
        }
        match (self.hamming, self.jaccard, &self.evidence) {
            (Some(distance), _, _) => format!("simhash distance {distance} of 64 bits"),
            (_, Some(jaccard), _) => format!("word-set Jaccard about {jaccard:.2}"),
            (_, _, Some(evidence)) => format!("shares {evidence}"),
            _ => format!("{} declared in the post", self.kind.as_str()),
        }
    }

    /// Explicit references name their parent; similarity only points back in time.
    fn may_be_parent_of(&self, created_at_ms: i64) -> bool {
        matches!(self.kind, EdgeKind::Repost | EdgeKind::Quote | EdgeKind::Reply)
            || self.parent_time_ms <= created_at_ms
    }
}

/// The detector: indexes, graph and configuration.
#[derive(Clone, Serialize, Deserialize)]
pub struct Detector {
    config: DetectorConfig,
    near_dups: NearDupIndex,
    similar_sets: MinHashIndex,
    shared_urls: SharedUrlIndex,
    embedded: SemanticIndex,
    graph: CascadeGraph,
    clock: EventClock,
    evicted_to_ms: i64,
    stats: DetectorStats,
}

impl Detector {
    /// A detector with empty state.
    pub fn new(config: DetectorConfig) -> Detector {
        Detector {
            near_dups: NearDupIndex::new(config.max_hamming),
            similar_sets: MinHashIndex::new(),
            shared_urls: SharedUrlIndex::default(),
            embedded: SemanticIndex::new(),
            graph: CascadeGraph::default(),
            clock: EventClock::new(
                Duration::seconds(config.max_event_time_lead_secs as i64).num_milliseconds(),
                Duration::seconds(config.allowed_lateness_secs as i64).num_milliseconds(),
            ),
            evicted_to_ms: i64::MIN,
            stats: DetectorStats::default(),
            config,
        }
    }

    /// The graph, for queries.
    pub fn graph(&self) -> &CascadeGraph {
        &self.graph
    }

    /// What the detector has counted so far.
    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// Fingerprints in the near-duplicate window.
    pub fn window_len(&self) -> usize {
        self.near_dups.len()
    }

    /// Embedded posts in the semantic window.
    pub fn semantic_window_len(&self) -> usize {
        self.embedded.len()
    }

    fn is_duplicate(&self, post: &Post) -> bool {
        self.graph.key_of(&post.id).and_then(|key| self.graph.node(key)).is_some_and(|node| node.seen)
    }

    /// Whether `post` should be embedded before it is processed: its key
    /// ([`PreparedPost::embedding_key`]) when it may be linked by meaning and nothing lexical (a
    /// shared URL, a near-duplicate) explains it now. Identical texts share one key, so they can
    /// share one embedding.
    ///
    /// Later posts only add to the indexes, so a post explained now is explained when processed.
    pub fn embedding_key(&self, prepared: &PreparedPost) -> Option<u64> {
        let key = prepared.embedding_key?;
        if self.is_duplicate(&prepared.post) {
            return None;
        }
        let created_at_ms = prepared.post.created_at.timestamp_millis();
        let explains = |c: &Candidate| c.may_be_parent_of(created_at_ms);
        if self.url_candidates(&prepared.canonical_urls).iter().any(explains) {
            return None;
        }
        if prepared.similar_enough(&self.config) {
            if self.near_dup_candidates(prepared.fingerprint.simhash).iter().any(explains) {
                return None;
            }
            if let Some(signature) = &prepared.signature
                && self.similar_set_candidates(signature, prepared.fingerprint.simhash).iter().any(explains)
            {
                return None;
            }
        }
        Some(key)
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
        self.process_scanned(prepared, embedding.map(|embedding| (embedding, None)), arrived_at)
    }

    /// Processes a batch of prepared posts in order, as [`Detector::process_prepared`] does one
    /// by one, with the same result: the first pass of the semantic scan for every embedded post
    /// runs first, against the window as it stands, split over at most `threads` threads; each
    /// post's scan is finished when it is linked, over what entered the window since.
    pub fn process_batch(&mut self, batch: Vec<BatchPost>, threads: usize) -> Vec<Option<Detection>> {
        let config = &self.config.semantic;
        // One prescan per embedded post, consumed in the same order below.
        let embedded: Vec<&TextEmbedding> = batch.iter().filter_map(|post| post.embedding).collect();
        let mut prescans = if config.enabled && threads > 1 && embedded.len() > 1 {
            self.embedded.prescan_all(&embedded, config.top_k, config.min_cosine, threads)
        } else {
            vec![None; embedded.len()]
        }
        .into_iter();
        let mut detections = Vec::with_capacity(batch.len());
        for BatchPost { prepared, embedding, arrived_at } in batch {
            let embedded = embedding.map(|embedding| (embedding, prescans.next().flatten()));
            detections.push(self.process_scanned(prepared, embedded, arrived_at));
        }
        detections
    }

    /// [`Detector::process_prepared`] with the first pass of the post's semantic scan, when it was
    /// done ahead.
    fn process_scanned(
        &mut self,
        prepared: PreparedPost,
        embedded: Option<(&TextEmbedding, Option<Prescan>)>,
        arrived_at: Option<DateTime<Utc>>,
    ) -> Option<Detection> {
        let similar_enough = prepared.similar_enough(&self.config);
        let PreparedPost { post, fingerprint: print, signature, canonical_urls, content_words: words, .. } = prepared;
        if self.is_duplicate(&post) {
            self.stats.duplicates += 1;
            return None;
        }
        let created_at_ms = post.created_at.timestamp_millis();
        match self.clock.observe(created_at_ms, arrived_at.map(|time| time.timestamp_millis())) {
            Timeliness::OnTime => {}
            Timeliness::Late => self.stats.late += 1,
            Timeliness::Ahead => self.stats.ahead += 1,
        }
        self.evict();
        let mut candidates = self.explicit_candidates(&post);
        candidates.extend(self.url_candidates(&canonical_urls));
        if similar_enough {
            candidates.extend(self.near_dup_candidates(print.simhash));
        }
        if let Some(signature) = &signature {
            candidates.extend(self.similar_set_candidates(signature, print.simhash));
        }
        // Meaning is weighed only for what nothing lexical explains.
        let embedded = embedded
            .filter(|_| self.config.semantic.enabled && !candidates.iter().any(|c| c.may_be_parent_of(created_at_ms)));
        if let Some((embedding, prescan)) = &embedded {
            let query = MeaningQuery { embedding, words: &words, created_at_ms, prescan: prescan.as_ref() };
            candidates.extend(self.semantic_candidate(&query));
        }
        // Precedence by kind, then strongest evidence, then earliest; at most one edge per parent.
        candidates.sort_by_key(|c| (c.kind, c.rank, c.parent_time_ms, c.parent));
        let mut seen_parents = Vec::with_capacity(candidates.len());
        candidates.retain(|c| {
            let first = !seen_parents.contains(&c.parent);
            seen_parents.push(c.parent);
            first
        });
        // Similarity is symmetric but derivation is not: only an earlier post can be a parent by
        // similarity. A later one (delivered first, from another partition) is bridged instead,
        // with the edge pointing from it to this post.
        let primary_index = candidates.iter().position(|c| c.may_be_parent_of(created_at_ms));
        let primary = primary_index.map(|i| (candidates[i].parent, candidates[i].kind));
        let parent_evidence = primary_index.map(|i| candidates[i].in_words()).unwrap_or_default();
        // Which cascades the post bridges is decided before it merges them.
        let bridges = self.bridging_edges(&candidates, primary_index, created_at_ms);
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
            primary,
            bridges.iter().map(|(_, bridge)| *bridge).collect(),
        );
        let key = placement.key;
        if similar_enough {
            self.near_dups.insert(print.simhash, key, created_at_ms);
        }
        if let Some(signature) = signature {
            self.similar_sets.insert(signature, print.simhash, key, created_at_ms);
        }
        for url in &canonical_urls {
            self.shared_urls.record_share(url, key, created_at_ms);
        }
        if let Some((embedding, _)) = embedded {
            self.embedded.insert(key, created_at_ms, embedding, words);
            self.embedded.evict_beyond(self.config.semantic.max_window_posts);
        }

        let edge = |c: &Candidate, is_primary: bool, reversed: bool| {
            let other = self.graph.node(c.parent).expect("candidate parents are live");
            let (child_id, parent_id) = match reversed {
                false => (post.id.clone(), other.post_id.to_string()),
                true => (other.post_id.to_string(), post.id.clone()),
            };
            let delta = created_at_ms - c.parent_time_ms;
            EdgeRecord {
                child_id,
                parent_id,
                kind: c.kind,
                is_primary,
                cascade_id: placement.cascade_id.clone(),
                hamming_distance: c.hamming.map(|d| d as u8),
                jaccard: c.jaccard,
                time_delta_ms: other.seen.then_some(if reversed { -delta } else { delta }),
                semantic: c.semantic,
                evidence: c.evidence.clone(),
                created_at: if reversed { millis_to_time(c.parent_time_ms) } else { post.created_at },
            }
        };
        let primary_edge = primary_index.map(|i| edge(&candidates[i], true, false));
        let (parent_id, parent_kind) = match &primary_edge {
            Some(edge) => (Some(edge.parent_id.clone()), Some(edge.kind)),
            None => (None, None),
        };
        let edges: Vec<EdgeRecord> = primary_edge
            .into_iter()
            .chain(bridges.iter().map(|(i, bridge)| edge(&candidates[*i], false, bridge.other_is_later)))
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
                simhash: print.simhash,
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

    fn explicit_candidates(&mut self, post: &Post) -> Vec<Candidate> {
        post.explicit_references()
            .map(|(kind, id)| {
                let parent = self.graph.node_or_placeholder(id, post.created_at);
                let parent_time_ms = self.graph.created_at_ms(parent).expect("just looked up");
                Candidate {
                    parent,
                    kind,
                    rank: 0,
                    hamming: None,
                    jaccard: None,
                    evidence: None,
                    semantic: None,
                    parent_time_ms,
                }
            })
            .collect()
    }

    fn url_candidates(&self, canonical_urls: &[String]) -> Vec<Candidate> {
        canonical_urls
            .iter()
            .filter_map(|url| {
                let first = self.shared_urls.first_share(url)?;
                self.graph.node(first.payload)?;
                Some(Candidate {
                    parent: first.payload,
                    kind: EdgeKind::SharedUrl,
                    rank: 0,
                    hamming: None,
                    jaccard: None,
                    evidence: Some(url.clone()),
                    semantic: None,
                    parent_time_ms: first.created_at_ms,
                })
            })
            .collect()
    }

    fn near_dup_candidates(&self, simhash: u64) -> Vec<Candidate> {
        let mut found = Vec::new();
        self.near_dups.for_each_near(simhash, |m| {
            if self.graph.node(m.payload).is_some() {
                found.push(Candidate {
                    parent: m.payload,
                    kind: EdgeKind::NearDuplicate,
                    rank: m.distance,
                    hamming: Some(m.distance),
                    jaccard: None,
                    evidence: None,
                    semantic: None,
                    parent_time_ms: m.created_at_ms,
                });
            }
        });
        found
    }

    fn similar_set_candidates(&self, signature: &minhash::Signature, simhash: u64) -> Vec<Candidate> {
        self.similar_sets
            .similar(signature, self.config.min_jaccard)
            .into_iter()
            .filter(|m| hamming(m.simhash, simhash) <= self.config.max_similar_hamming)
            .filter(|m| self.graph.node(m.payload).is_some())
            .map(|m| Candidate {
                parent: m.payload,
                kind: EdgeKind::NearDuplicate,
                rank: 100 + ((1.0 - m.jaccard) * 100.0).round() as u32,
                hamming: Some(hamming(m.simhash, simhash)),
                jaccard: Some(m.jaccard),
                evidence: None,
                semantic: None,
                parent_time_ms: m.created_at_ms,
            })
            .collect()
    }

    /// The best earlier post by meaning, if its evidence passes the rule for its kind.
    ///
    /// Candidates are ranked by cosine plus weighted word overlap; the margin is the winner's lead
    /// over the best candidate in another cascade, so earlier summaries of the same article do not
    /// count against it. When the winner was itself linked by meaning, the post must also pass the
    /// rule against the origin of that chain (`check_origin`).
    fn semantic_candidate(&self, query: &MeaningQuery) -> Option<Candidate> {
        let choice = self.semantic_choice(query)?;
        choice.links.then_some(Candidate {
            parent: choice.parent,
            kind: choice.kind,
            rank: 0,
            hamming: None,
            jaccard: None,
            evidence: None,
            semantic: Some(choice.evidence),
            parent_time_ms: choice.parent_time_ms,
        })
    }

    /// The best candidate by meaning for a post that nothing lexical explains, with the evidence
    /// that decides it, as [`Detector::process_prepared`] would weigh it now; `None` when no
    /// candidate reaches `min_cosine`. For tools that fit and audit the decision.
    pub fn explain_semantic(&self, prepared: &PreparedPost, embedding: &TextEmbedding) -> Option<SemanticChoice> {
        self.semantic_choice(&MeaningQuery::of(prepared, embedding))
    }

    /// Every candidate by meaning that [`Detector::process_prepared`] would rank for a post now,
    /// best first. For tools that measure how often the source is among them (`relink
    /// --candidates`).
    pub fn semantic_candidates(&self, prepared: &PreparedPost, embedding: &TextEmbedding) -> Vec<RankedCandidate> {
        self.ranked_candidates(&MeaningQuery::of(prepared, embedding))
            .into_iter()
            .map(|(rank, neighbour)| RankedCandidate { rank, neighbour, cascade: self.graph.cascade_of(neighbour.key) })
            .collect()
    }

    /// The nearest earlier posts by meaning, ranked best first by cosine plus weighted word
    /// overlap (ties to the older post).
    fn ranked_candidates(&self, query: &MeaningQuery) -> Vec<(f32, Neighbour)> {
        let config = &self.config.semantic;
        let (top_k, lexical_top_k) = (config.top_k, config.lexical_top_k);
        let mut ranked: Vec<_> = self
            .embedded
            .nearest(query.embedding, query.words, top_k, lexical_top_k, config.min_cosine, query.prescan)
            .into_iter()
            .filter(|n| n.created_at_ms <= query.created_at_ms && self.graph.node(n.key).is_some())
            .map(|n| (n.evidence.cosine + config.rank_overlap_weight * n.evidence.word_overlap, n))
            .collect();
        ranked.sort_by(|(a, x), (b, y)| b.total_cmp(a).then(x.created_at_ms.cmp(&y.created_at_ms)));
        ranked
    }

    fn semantic_choice(&self, query: &MeaningQuery) -> Option<SemanticChoice> {
        let config = &self.config.semantic;
        let ranked = self.ranked_candidates(query);
        let (best_rank, best) = ranked.first()?;
        let best_cascade = self.graph.cascade_of(best.key);
        let runner_up = ranked.iter().skip(1).find(|(_, n)| self.graph.cascade_of(n.key) != best_cascade);
        let mut evidence = best.evidence;
        evidence.margin = best_rank - runner_up.map_or(0.0, |(rank, _)| *rank);
        let (kind, mut links) = self.weigh(&mut evidence);
        let mut origin = None;
        if config.check_origin {
            let origin_key = self.semantic_origin(best.key);
            // `semantic_origin` walks only through posts in the index, so the origin is there.
            if origin_key != best.key
                && let Some(mut against_origin) = self.embedded.evidence(origin_key, query.embedding, query.words)
            {
                against_origin.margin = evidence.margin;
                let (_, origin_links) = self.weigh(&mut against_origin);
                evidence.origin_score = Some(against_origin.score);
                links &= origin_links;
                origin = Some((origin_key, against_origin));
            }
        }
        Some(SemanticChoice { parent: best.key, parent_time_ms: best.created_at_ms, kind, evidence, origin, links })
    }

    /// Decides the kind of `evidence` by its length ratio and scores it by that kind's model; returns
    /// the kind and whether the probability reaches the model's minimum.
    fn weigh(&self, evidence: &mut SemanticEvidence) -> (EdgeKind, bool) {
        let config = &self.config.semantic;
        evidence.is_summary = evidence.length_ratio <= config.summary_max_length_ratio;
        let (kind, model) = match evidence.is_summary {
            true => (EdgeKind::Summary, &config.summary),
            false => (EdgeKind::Paraphrase, &config.paraphrase),
        };
        evidence.score = model.probability(evidence);
        (kind, evidence.score >= model.min_probability)
    }

    /// The earliest post of the chain of meaning that `key` ends: up its primary parents for as long
    /// as they are `paraphrase` or `summary` links to posts still in the semantic window.
    fn semantic_origin(&self, key: NodeKey) -> NodeKey {
        let mut origin = key;
        while let Some((parent, EdgeKind::Paraphrase | EdgeKind::Summary)) =
            self.graph.node(origin).and_then(|node| node.parent())
        {
            if !self.embedded.contains(parent) {
                break;
            }
            origin = parent;
        }
        origin
    }

    /// Candidates kept as evidence besides the primary parent: the best one into each other cascade,
    /// with the index of the candidate it came from.
    fn bridging_edges(
        &self,
        candidates: &[Candidate],
        primary: Option<usize>,
        created_at_ms: i64,
    ) -> Vec<(usize, Bridge)> {
        let mut cascades: Vec<Option<NodeKey>> =
            primary.map(|i| self.graph.cascade_of(candidates[i].parent)).into_iter().collect();
        let mut bridges = Vec::new();
        for (i, candidate) in candidates.iter().enumerate() {
            let cascade = self.graph.cascade_of(candidate.parent);
            if Some(i) != primary && !cascades.contains(&cascade) {
                cascades.push(cascade);
                let other_is_later = !candidate.may_be_parent_of(created_at_ms);
                bridges.push((i, Bridge { other: candidate.parent, kind: candidate.kind, other_is_later }));
            }
        }
        bridges
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
        let window_ms = Duration::seconds(self.config.window_secs as i64).num_milliseconds();
        let cutoff = self.clock.now_ms().saturating_sub(window_ms);
        if cutoff > self.evicted_to_ms.saturating_add(window_ms / 100) {
            self.near_dups.evict_before(cutoff);
            self.similar_sets.evict_before(cutoff);
            self.shared_urls.evict_before(cutoff);
            self.embedded.evict_before(cutoff);
            self.graph.evict_before(cutoff);
            self.evicted_to_ms = cutoff;
        }
        let bound = self.config.max_window_posts.max(2);
        if self.graph.len() + 2 > bound {
            let excess = self.graph.len() + 2 - bound + bound / 100;
            let before = self.graph.len();
            let first_kept = self.graph.evict_oldest(excess);
            self.near_dups.evict_payloads_below(first_kept);
            self.similar_sets.evict_payloads_below(first_kept);
            self.shared_urls.evict_payloads_below(first_kept);
            self.embedded.evict_keys_below(first_kept);
            self.stats.evicted_early += (before - self.graph.len()) as u64;
        }
    }
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::semantic::LinkModel;

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
        assert_eq!(original.merges[0].absorbed_cascade_id, crate::graph::cascade_id_for("bluesky:5"));
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
        assert_eq!(absorbed, [crate::graph::cascade_id_for("x:3")]);
        // Quotes x:2 and copies x:1: x:2's cascade, holding x:3's, merges into x:1's.
        let second = detector.process(post("y:5", 4, CLAIM, r#","quote_of":"x:2""#)).unwrap();
        let absorbed: Vec<_> = second.merges.iter().map(|m| m.absorbed_cascade_id.as_str()).collect();
        assert_eq!(absorbed, [crate::graph::cascade_id_for("x:2"), crate::graph::cascade_id_for("x:3")]);
        assert!(second.merges.iter().all(|m| m.into_cascade_id == crate::graph::cascade_id_for("x:1")));
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

    /// The decision on evidence given directly, a case each side of every boundary: the length
    /// ratio that makes a summary, and each kind's smallest probability. Tests that run the model
    /// assert only on fixtures far from these boundaries.
    #[test]
    fn the_decision_at_each_boundary_on_evidence_given_directly() {
        let detector = Detector::new(DetectorConfig::default());
        let semantic = &detector.config.semantic;
        // A one-chunk candidate: its first chunk is all of it, so `lead_cosine` is the cosine.
        let evidence = |cosine: f32, length_ratio: f32| SemanticEvidence {
            cosine,
            word_overlap: 0.5,
            lead_cosine: cosine,
            margin: 0.25,
            length_ratio,
            score: 0.0,
            is_summary: false,
            origin_score: None,
        };
        let decide = |cosine: f32, length_ratio: f32| detector.weigh(&mut evidence(cosine, length_ratio));
        // The cosine at which a model's probability is exactly its minimum, the rest held.
        let boundary = |model: &LinkModel, length_ratio: f32| {
            let logit = (model.min_probability / (1.0 - model.min_probability)).ln();
            let without_cosine = model.log_odds(&evidence(0.0, length_ratio));
            (logit - without_cosine) / (model.cosine + model.lead_cosine)
        };
        let cut = semantic.summary_max_length_ratio;
        let summary_cosine = boundary(&semantic.summary, cut);
        assert_eq!(decide(summary_cosine + 1e-3, cut), (EdgeKind::Summary, true));
        assert_eq!(decide(summary_cosine - 1e-3, cut), (EdgeKind::Summary, false));
        let longer = cut + 1e-3;
        let paraphrase_cosine = boundary(&semantic.paraphrase, longer);
        assert_eq!(decide(paraphrase_cosine + 1e-3, longer), (EdgeKind::Paraphrase, true));
        assert_eq!(decide(paraphrase_cosine - 1e-3, longer), (EdgeKind::Paraphrase, false));
        // The same evidence either side of the length cut meets a different model.
        assert_ne!(summary_cosine, paraphrase_cosine);
        let between = (summary_cosine + paraphrase_cosine) / 2.0;
        assert_eq!(decide(between, cut).1, summary_cosine < paraphrase_cosine);
        assert_eq!(decide(between, longer).1, paraphrase_cosine < summary_cosine);
    }

    /// The model's probability is the logistic of its weighted evidence.
    #[test]
    fn a_link_models_probability_is_the_logistic_of_its_weighted_evidence() {
        let model = LinkModel {
            bias: -1.0,
            cosine: 2.0,
            word_overlap: 1.0,
            lead_cosine: 1.0,
            margin: 4.0,
            log_length_ratio: -1.0,
            min_probability: 0.5,
        };
        let evidence = SemanticEvidence {
            cosine: 0.5,
            word_overlap: 0.25,
            lead_cosine: 0.5,
            margin: 0.125,
            length_ratio: std::f32::consts::E,
            score: 0.0,
            is_summary: false,
            origin_score: None,
        };
        // -1 + 2 × 0.5 + 0.25 + 1 × 0.5 + 4 × 0.125 - 1 × ln e = 0.25.
        assert!((model.log_odds(&evidence) - 0.25).abs() < 1e-6);
        assert!((model.probability(&evidence) - 1.0 / (1.0 + (-0.25f32).exp())).abs() < 1e-6);
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
