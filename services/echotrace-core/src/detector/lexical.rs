//! Linking by words: the near-duplicate index (simhash within `max_hamming`), the word-set index
//! (MinHash LSH, verified by estimated Jaccard and a looser simhash distance) and the shared-URL
//! index (the first post of each canonical URL), with the candidates each gives a post.
//!
//! Each lookup reads the entries of the post's own keys (simhash blocks, band keys, canonical
//! URLs), which is what lets a deployment beyond one process shard these indexes by key
//! (`docs/scaling.md`); a candidate counts only while its node is live in the graph.

use super::DetectorConfig;
use super::candidates::Candidate;
use crate::fingerprint::{Fingerprint, hamming};
use crate::graph::{CascadeGraph, NodeKey};
use crate::link::minhash::{MinHashIndex, Signature};
use crate::link::near_dup::NearDupIndex;
use crate::link::urls::SharedUrlIndex;
use crate::prepare::PreparedPost;
use crate::records::EdgeKind;
use serde::{Deserialize, Serialize};

/// The lexical indexes of the window.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct LexicalIndexes {
    near_dups: NearDupIndex,
    similar_sets: MinHashIndex,
    shared_urls: SharedUrlIndex,
}

impl LexicalIndexes {
    /// Empty indexes; near-duplicates within `max_hamming` bits.
    pub fn new(max_hamming: u32) -> LexicalIndexes {
        LexicalIndexes {
            near_dups: NearDupIndex::new(max_hamming),
            similar_sets: MinHashIndex::new(),
            shared_urls: SharedUrlIndex::default(),
        }
    }

    /// Fingerprints in the window.
    pub fn len(&self) -> usize {
        self.near_dups.len()
    }

    /// Every candidate parent of `prepared` by shared URL, near-duplicate simhash and word set.
    pub fn candidates(&self, prepared: &PreparedPost, config: &DetectorConfig, graph: &CascadeGraph) -> Vec<Candidate> {
        let mut candidates = self.url_candidates(&prepared.canonical_urls, graph);
        if prepared.similar_enough(config) {
            candidates.extend(self.near_dup_candidates(prepared.fingerprint.simhash, graph));
        }
        if let Some(signature) = &prepared.signature {
            candidates.extend(self.similar_set_candidates(signature, prepared.fingerprint.simhash, config, graph));
        }
        candidates
    }

    /// Whether a candidate by words could be the parent of `prepared` now, so that it needs no
    /// embedding.
    pub fn explains(&self, prepared: &PreparedPost, config: &DetectorConfig, graph: &CascadeGraph) -> bool {
        let created_at_ms = prepared.post.created_at.timestamp_millis();
        self.candidates(prepared, config, graph).iter().any(|c| c.may_be_parent_of(created_at_ms))
    }

    /// Enters a placed post under its keys: its simhash when it is `similar_enough`, its
    /// signature, and each canonical URL it shares.
    pub fn insert(
        &mut self,
        key: NodeKey,
        created_at_ms: i64,
        fingerprint: Fingerprint,
        similar_enough: bool,
        signature: Option<Signature>,
        canonical_urls: &[String],
    ) {
        if similar_enough {
            self.near_dups.insert(fingerprint.simhash, key, created_at_ms);
        }
        if let Some(signature) = signature {
            self.similar_sets.insert(signature, fingerprint.simhash, key, created_at_ms);
        }
        for url in canonical_urls {
            self.shared_urls.record_share(url, key, created_at_ms);
        }
    }

    /// Drops every entry of a post older than `cutoff_ms`.
    pub fn evict_before(&mut self, cutoff_ms: i64) {
        self.near_dups.evict_before(cutoff_ms);
        self.similar_sets.evict_before(cutoff_ms);
        self.shared_urls.evict_before(cutoff_ms);
    }

    /// Drops every entry of a node below `first_kept` (the graph evicted them early).
    pub fn evict_payloads_below(&mut self, first_kept: NodeKey) {
        self.near_dups.evict_payloads_below(first_kept);
        self.similar_sets.evict_payloads_below(first_kept);
        self.shared_urls.evict_payloads_below(first_kept);
    }

    fn url_candidates(&self, canonical_urls: &[String], graph: &CascadeGraph) -> Vec<Candidate> {
        canonical_urls
            .iter()
            .filter_map(|url| {
                let first = self.shared_urls.first_share(url)?;
                graph.node(first.payload)?;
                Some(Candidate {
                    evidence: Some(url.clone()),
                    ..Candidate::plain(first.payload, EdgeKind::SharedUrl, first.created_at_ms)
                })
            })
            .collect()
    }

    fn near_dup_candidates(&self, simhash: u64, graph: &CascadeGraph) -> Vec<Candidate> {
        let mut found = Vec::new();
        self.near_dups.for_each_near(simhash, |m| {
            if graph.node(m.payload).is_some() {
                found.push(Candidate {
                    rank: m.distance,
                    hamming: Some(m.distance),
                    ..Candidate::plain(m.payload, EdgeKind::NearDuplicate, m.created_at_ms)
                });
            }
        });
        found
    }

    fn similar_set_candidates(
        &self,
        signature: &Signature,
        simhash: u64,
        config: &DetectorConfig,
        graph: &CascadeGraph,
    ) -> Vec<Candidate> {
        self.similar_sets
            .similar(signature, config.min_jaccard)
            .into_iter()
            .filter(|m| hamming(m.simhash, simhash) <= config.max_similar_hamming)
            .filter(|m| graph.node(m.payload).is_some())
            .map(|m| Candidate {
                rank: 100 + ((1.0 - m.jaccard) * 100.0).round() as u32,
                hamming: Some(hamming(m.simhash, simhash)),
                jaccard: Some(m.jaccard),
                ..Candidate::plain(m.payload, EdgeKind::NearDuplicate, m.created_at_ms)
            })
            .collect()
    }
}
