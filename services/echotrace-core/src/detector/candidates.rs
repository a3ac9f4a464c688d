//! Candidate parents, whichever linker found them, and the rules that choose among them.
//!
//! Every linker (the lexical window's answers through [`lexical_candidates`], [`super::meaning`],
//! the post's own references) gives [`Candidate`]s. [`by_precedence`] orders them by kind
//! (repost > quote > reply > shared URL > near-duplicate > paraphrase > summary), then strongest
//! evidence, then earliest, and keeps one per parent. Only an earlier post can be a parent by similarity; a later one (delivered first,
//! from another partition) and the best candidate into each other cascade become bridges
//! ([`bridging_edges`]), which merge cascades.

use super::graph::{Bridge, CascadeGraph, NodeKey};
use crate::link::lexical::LexicalAnswer;
use crate::link::semantic::SemanticEvidence;
use crate::post::Post;
use crate::prepare::PreparedPost;
use crate::prepare::fingerprint::hamming;
use crate::records::{EdgeKind, EdgeRecord};
use chrono::{DateTime, Utc};

/// A candidate parent found by one of the linkers.
pub(super) struct Candidate {
    /// The candidate's node in the graph.
    pub parent: NodeKey,
    /// The kind of edge it would be.
    pub kind: EdgeKind,
    /// Within a kind, lower is stronger: simhash distance, or 100 + distance in Jaccard points.
    pub rank: u32,
    /// The simhash distance, for near-duplicates.
    pub hamming: Option<u32>,
    /// The estimated word-set Jaccard, for near-duplicates found by MinHash.
    pub jaccard: Option<f32>,
    /// What is shared, in words (the canonical URL).
    pub evidence: Option<String>,
    /// The evidence by meaning, for paraphrases and summaries.
    pub semantic: Option<SemanticEvidence>,
    /// The candidate's event time.
    pub parent_time_ms: i64,
}

/// The post being placed, as its edges name it.
pub(super) struct Child<'a> {
    /// Its id.
    pub post_id: &'a str,
    /// Its `created_at`.
    pub created_at: DateTime<Utc>,
    /// The cascade it was placed in.
    pub cascade_id: &'a str,
}

impl Candidate {
    /// A candidate that says only its kind, its parent and when that parent was posted.
    pub fn plain(parent: NodeKey, kind: EdgeKind, parent_time_ms: i64) -> Candidate {
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
    }

    /// The parents `post` names (repost, quote, reply), with a placeholder node for each that the
    /// window does not hold yet.
    pub fn explicit(graph: &mut CascadeGraph, post: &Post) -> Vec<Candidate> {
        post.explicit_references()
            .map(|(kind, id)| {
                let parent = graph.node_or_placeholder(id, post.created_at);
                let parent_time_ms = graph.created_at_ms(parent).expect("just looked up");
                Candidate::plain(parent, kind, parent_time_ms)
            })
            .collect()
    }

    /// The evidence in words, for the people reading a cascade.
    pub fn in_words(&self) -> String {
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
    pub fn may_be_parent_of(&self, created_at_ms: i64) -> bool {
        matches!(self.kind, EdgeKind::Repost | EdgeKind::Quote | EdgeKind::Reply)
            || self.parent_time_ms <= created_at_ms
    }

    /// The edge this candidate gives `child`: from the child to it, or from it to the child when
    /// `reversed` (it is the later post).
    pub fn edge(&self, graph: &CascadeGraph, child: &Child, is_primary: bool, reversed: bool) -> EdgeRecord {
        let other = graph.node(self.parent).expect("candidate parents are live");
        let (child_id, parent_id) = match reversed {
            false => (child.post_id.to_owned(), other.post_id.to_string()),
            true => (other.post_id.to_string(), child.post_id.to_owned()),
        };
        let delta = child.created_at.timestamp_millis() - self.parent_time_ms;
        EdgeRecord {
            child_id,
            parent_id,
            kind: self.kind,
            is_primary,
            cascade_id: child.cascade_id.to_owned(),
            hamming_distance: self.hamming.map(|d| d as u8),
            jaccard: self.jaccard,
            time_delta_ms: other.seen.then_some(if reversed { -delta } else { delta }),
            semantic: self.semantic,
            evidence: self.evidence.clone(),
            created_at: if reversed { millis_to_time(self.parent_time_ms) } else { child.created_at },
        }
    }
}

/// The candidate parents a lexical answer gives `prepared`, each match's payload turned into a
/// live node by `resolve(payload, created_at_ms)` (`None`: the node has left the window). A URL
/// share naming a URL the post does not have (an answer to another post) gives nothing.
pub(super) fn lexical_candidates(
    answer: &LexicalAnswer,
    prepared: &PreparedPost,
    resolve: impl Fn(u64, i64) -> Option<NodeKey>,
) -> Vec<Candidate> {
    let simhash = prepared.fingerprint.simhash;
    let urls = answer.shared_urls.iter().filter_map(|share| {
        let url = prepared.canonical_urls.get(share.url as usize)?;
        let parent = resolve(share.first.payload, share.first.created_at_ms)?;
        Some(Candidate {
            evidence: Some(url.clone()),
            ..Candidate::plain(parent, EdgeKind::SharedUrl, share.first.created_at_ms)
        })
    });
    let near = answer.near_duplicates.iter().filter_map(|m| {
        Some(Candidate {
            rank: m.distance,
            hamming: Some(m.distance),
            ..Candidate::plain(resolve(m.payload, m.created_at_ms)?, EdgeKind::NearDuplicate, m.created_at_ms)
        })
    });
    let sets = answer.similar_sets.iter().filter_map(|m| {
        Some(Candidate {
            rank: 100 + ((1.0 - m.jaccard) * 100.0).round() as u32,
            hamming: Some(hamming(m.simhash, simhash)),
            jaccard: Some(m.jaccard),
            ..Candidate::plain(resolve(m.payload, m.created_at_ms)?, EdgeKind::NearDuplicate, m.created_at_ms)
        })
    });
    urls.chain(near).chain(sets).collect()
}

/// The candidates by precedence of kind, then strongest evidence, then earliest; at most one per
/// parent (its first by that order).
pub(super) fn by_precedence(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by_key(|c| (c.kind, c.rank, c.parent_time_ms, c.parent));
    let mut seen_parents = Vec::with_capacity(candidates.len());
    candidates.retain(|c| {
        let first = !seen_parents.contains(&c.parent);
        seen_parents.push(c.parent);
        first
    });
    candidates
}

/// Candidates kept as evidence besides the primary parent: the best one into each other cascade,
/// with the index of the candidate it came from.
pub(super) fn bridging_edges(
    graph: &CascadeGraph,
    candidates: &[Candidate],
    primary: Option<usize>,
    created_at_ms: i64,
) -> Vec<(usize, Bridge)> {
    let mut cascades: Vec<Option<NodeKey>> =
        primary.map(|i| graph.cascade_of(candidates[i].parent)).into_iter().collect();
    let mut bridges = Vec::new();
    for (i, candidate) in candidates.iter().enumerate() {
        let cascade = graph.cascade_of(candidate.parent);
        if Some(i) != primary && !cascades.contains(&cascade) {
            cascades.push(cascade);
            let other_is_later = !candidate.may_be_parent_of(created_at_ms);
            bridges.push((i, Bridge { other: candidate.parent, kind: candidate.kind, other_is_later }));
        }
    }
    bridges
}

/// A time from milliseconds since the epoch (the epoch itself when out of range).
pub(super) fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
