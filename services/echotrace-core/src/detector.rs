//! The stages wired together: one post in, one [`Detection`] out.
//!
//! [`Detector::process`] normalizes and fingerprints the text, gathers candidate parents (explicit
//! ids, shared canonical URLs, near-duplicates), picks the primary parent by precedence
//! (repost > quote > reply > shared URL > near-duplicate; among near-duplicates the closest, then the
//! earliest), places the post in the [`CascadeGraph`] and returns every row it produced. It is
//! deterministic: the same stream gives the same output, whether it comes from Kafka or a file.
//!
//! All state (indexes and graph) lives here, behind one value, so it can be snapshotted with the
//! consumer offsets that produced it.

use crate::fingerprint::{FINGERPRINT_VERSION, fingerprint, hamming};
use crate::graph::{CascadeGraph, NodeFacts, NodeKey};
use crate::link::minhash::{self, MinHashIndex};
use crate::link::near_dup::NearDupIndex;
use crate::link::urls::{SharedUrlIndex, canonical_url, urls_in_text};
use crate::normalize::normalize;
use crate::post::Post;
use crate::records::{CascadeRecord, EdgeKind, EdgeRecord, MergeRecord, PostRecord};
use chrono::Duration;
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
    /// Whether posts sharing a canonical URL are linked.
    pub link_shared_urls: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig { max_hamming: 3, min_features: 5, min_jaccard: 0.6, max_similar_hamming: 12, window_secs: 6 * 3600, link_shared_urls: true }
    }
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
}

/// Counters of what the detector has seen, for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DetectorStats {
    /// Posts processed.
    pub posts: u64,
    /// Posts dropped as duplicates of an already processed id.
    pub duplicates: u64,
    /// Edges emitted, by kind, in [`EdgeKind::ALL`] order.
    pub edges_by_kind: [u64; 5],
    /// Cascade merges.
    pub merges: u64,
}

/// The distinct canonical URLs a post shares, in its `urls` or in its text.
fn canonical_urls_of(post: &Post) -> Vec<String> {
    let mut canonical: Vec<String> =
        post.urls.iter().map(String::as_str).chain(urls_in_text(&post.text)).filter_map(canonical_url).collect();
    canonical.sort();
    canonical.dedup();
    canonical
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
    parent_time_ms: i64,
}

/// The detector: indexes, graph and configuration.
pub struct Detector {
    config: DetectorConfig,
    near_dups: NearDupIndex,
    similar_sets: MinHashIndex,
    shared_urls: SharedUrlIndex,
    graph: CascadeGraph,
    watermark_ms: i64,
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
            graph: CascadeGraph::default(),
            watermark_ms: i64::MIN,
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

    /// Processes one post. Returns `None` when a post with the same id was already processed.
    pub fn process(&mut self, post: Post) -> Option<Detection> {
        if self.graph.key_of(&post.id).and_then(|key| self.graph.node(key)).is_some_and(|node| node.seen) {
            self.stats.duplicates += 1;
            return None;
        }
        let created_at_ms = post.created_at.timestamp_millis();
        self.advance_watermark(created_at_ms);
        let normalized = normalize(&post.text);
        let print = fingerprint(&normalized);
        let similar_enough = print.features >= self.config.min_features;

        let canonical_urls = if self.config.link_shared_urls { canonical_urls_of(&post) } else { Vec::new() };
        let mut candidates = self.explicit_candidates(&post);
        candidates.extend(self.url_candidates(&canonical_urls));
        let signature = if similar_enough { minhash::signature(&normalized) } else { None };
        if similar_enough {
            candidates.extend(self.near_dup_candidates(print.simhash));
        }
        if let Some(signature) = &signature {
            candidates.extend(self.similar_set_candidates(signature, print.simhash));
        }
        // Precedence by kind, then strongest evidence, then earliest; at most one edge per parent.
        candidates.sort_by_key(|c| (c.kind, c.rank, c.parent_time_ms, c.parent));
        let mut seen_parents = Vec::with_capacity(candidates.len());
        candidates.retain(|c| {
            let first = !seen_parents.contains(&c.parent);
            seen_parents.push(c.parent);
            first
        });
        let primary = candidates.first().map(|c| (c.parent, c.kind));
        // Which cascades the post bridges is decided before it merges them.
        let bridges = self.bridging_edges(&candidates);
        let placement = self.graph.add_post(
            NodeFacts {
                post_id: &post.id,
                platform: &post.platform,
                author_handle: &post.author.handle,
                text: &post.text,
                created_at: post.created_at,
            },
            primary,
            bridges.clone(),
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

        let edges: Vec<EdgeRecord> = candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| *i == 0 || bridges.iter().any(|(parent, _)| *parent == c.parent))
            .map(|(i, c)| {
                let parent = self.graph.node(c.parent).expect("candidate parents are live");
                EdgeRecord {
                    child_id: post.id.clone(),
                    parent_id: parent.post_id.to_string(),
                    kind: c.kind,
                    is_primary: i == 0,
                    cascade_id: placement.cascade_id.clone(),
                    hamming_distance: c.hamming.map(|d| d as u8),
                    jaccard: c.jaccard,
                    time_delta_ms: parent.seen.then(|| created_at_ms - c.parent_time_ms),
                    evidence: c.evidence.clone(),
                    created_at: post.created_at,
                }
            })
            .collect();
        self.count(&edges, placement.merges.len());

        let (parent_id, parent_kind) = match edges.first() {
            Some(edge) => (Some(edge.parent_id.clone()), Some(edge.kind)),
            None => (None, None),
        };
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
                simhash: print.simhash,
                fingerprint_version: FINGERPRINT_VERSION,
            },
            edges,
            merges: placement.merges,
            cascade,
        })
    }

    fn explicit_candidates(&mut self, post: &Post) -> Vec<Candidate> {
        post.explicit_references()
            .map(|(kind, id)| {
                let parent = self.graph.node_or_placeholder(id, post.created_at);
                let parent_time_ms = self.graph.created_at_ms(parent).expect("just looked up");
                Candidate { parent, kind, rank: 0, hamming: None, jaccard: None, evidence: None, parent_time_ms }
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
                parent_time_ms: m.created_at_ms,
            })
            .collect()
    }

    /// Non-primary candidates kept as evidence: one per other cascade, the best of each.
    fn bridging_edges(&self, candidates: &[Candidate]) -> Vec<(NodeKey, EdgeKind)> {
        let mut cascades: Vec<Option<NodeKey>> = candidates.first().map(|c| self.graph.cascade_of(c.parent)).into_iter().collect();
        let mut bridges = Vec::new();
        for candidate in candidates.iter().skip(1) {
            let cascade = self.graph.cascade_of(candidate.parent);
            if !cascades.contains(&cascade) {
                cascades.push(cascade);
                bridges.push((candidate.parent, candidate.kind));
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

    /// Moves event time forward and evicts what fell out of the window (in steps of 1% of it).
    fn advance_watermark(&mut self, created_at_ms: i64) {
        self.watermark_ms = self.watermark_ms.max(created_at_ms);
        let window_ms = Duration::seconds(self.config.window_secs as i64).num_milliseconds();
        let cutoff = self.watermark_ms.saturating_sub(window_ms);
        if cutoff > self.evicted_to_ms.saturating_add(window_ms / 100) {
            self.near_dups.evict_before(cutoff);
            self.similar_sets.evict_before(cutoff);
            self.shared_urls.evict_before(cutoff);
            self.graph.evict_before(cutoff);
            self.evicted_to_ms = cutoff;
        }
    }
}
