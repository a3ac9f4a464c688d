//! Linking by meaning: for a post that nothing lexical explains, the nearest earlier posts of the
//! semantic window are ranked by cosine plus weighted word overlap, the best is weighed by the
//! summary or the paraphrase model (its kind decided by the length ratio), and, when the best was
//! itself linked by meaning, the post must also pass against the origin of that chain.
//!
//! The margin is the winner's lead over the best candidate in another cascade, so earlier
//! summaries of the same article do not count against it: this stage reads the graph's cascades
//! and primary parents as well as the semantic window.

use super::candidates::Candidate;
use crate::detector::graph::{CascadeGraph, NodeKey};
use crate::link::semantic::{Neighbour, SemanticConfig, SemanticEvidence, TextEmbedding};
use crate::link::semantic_shards::{ScanLimits, SemanticWindow, WindowPrescan};
use crate::prepare::PreparedPost;
use crate::records::EdgeKind;

/// The best candidate by meaning for one post and the evidence that decides it
/// ([`super::Detector::explain_semantic`]).
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

/// One candidate by meaning as the detector ranks it ([`super::Detector::semantic_candidates`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedCandidate {
    /// Its rank score: cosine plus `rank_overlap_weight` times word overlap.
    pub rank: f32,
    /// The candidate and its evidence, before the margin and the decision.
    pub neighbour: Neighbour,
    /// The cascade it is in.
    pub cascade: Option<NodeKey>,
}

/// What the candidates by meaning are looked up with.
pub(super) struct MeaningQuery<'a> {
    /// The post's embedding.
    pub embedding: &'a TextEmbedding,
    /// Its content words.
    pub words: &'a [u64],
    /// Its event time: only earlier posts are candidates.
    pub created_at_ms: i64,
    /// The first pass of the window's scan, done for the whole batch
    /// ([`super::Detector::process_batch`]).
    pub prescan: Option<&'a WindowPrescan>,
}

impl<'a> MeaningQuery<'a> {
    /// The query for a prepared post with its embedding, without a prescan.
    pub fn of(prepared: &'a PreparedPost, embedding: &'a TextEmbedding) -> MeaningQuery<'a> {
        let created_at_ms = prepared.post.created_at.timestamp_millis();
        MeaningQuery { embedding, words: &prepared.content_words, created_at_ms, prescan: None }
    }
}

/// The semantic window and the graph, read together to link one post by meaning.
pub(super) struct MeaningLinker<'a> {
    /// The settings and models of semantic linking.
    pub config: &'a SemanticConfig,
    /// The embedded posts of the window.
    pub index: &'a SemanticWindow,
    /// The cascades and primary parents.
    pub graph: &'a CascadeGraph,
}

impl MeaningLinker<'_> {
    /// The best earlier post by meaning, if its evidence passes the model for its kind (and
    /// against the origin of its chain, with `check_origin`).
    pub fn candidate(&self, query: &MeaningQuery) -> Option<Candidate> {
        let choice = self.choice(query)?;
        choice.links.then_some(Candidate {
            semantic: Some(choice.evidence),
            ..Candidate::plain(choice.parent, choice.kind, choice.parent_time_ms)
        })
    }

    /// The nearest earlier posts by meaning, ranked best first by cosine plus weighted word
    /// overlap (ties to the older post).
    pub fn ranked(&self, query: &MeaningQuery) -> Vec<(f32, Neighbour)> {
        let config = self.config;
        let mut ranked: Vec<_> = self
            .index
            .nearest(query.embedding, query.words, ScanLimits::of(config), query.prescan)
            .into_iter()
            .filter(|n| n.created_at_ms <= query.created_at_ms && self.graph.node(n.key).is_some())
            .map(|n| (n.evidence.cosine + config.rank_overlap_weight * n.evidence.word_overlap, n))
            .collect();
        ranked.sort_by(|(a, x), (b, y)| b.total_cmp(a).then(x.created_at_ms.cmp(&y.created_at_ms)));
        ranked
    }

    /// The best candidate with its evidence weighed; `None` when no candidate reaches
    /// `min_cosine`.
    pub fn choice(&self, query: &MeaningQuery) -> Option<SemanticChoice> {
        let ranked = self.ranked(query);
        let (best_rank, best) = ranked.first()?;
        let best_cascade = self.graph.cascade_of(best.key);
        let runner_up = ranked.iter().skip(1).find(|(_, n)| self.graph.cascade_of(n.key) != best_cascade);
        let mut evidence = best.evidence;
        evidence.margin = best_rank - runner_up.map_or(0.0, |(rank, _)| *rank);
        let (kind, mut links) = weigh(self.config, &mut evidence);
        let mut origin = None;
        if self.config.check_origin {
            let origin_key = self.origin(best.key);
            // `origin` walks only through posts in the index, so the origin is there.
            if origin_key != best.key
                && let Some(mut against_origin) = self.index.evidence(origin_key, query.embedding, query.words)
            {
                against_origin.margin = evidence.margin;
                let (_, origin_links) = weigh(self.config, &mut against_origin);
                evidence.origin_score = Some(against_origin.score);
                links &= origin_links;
                origin = Some((origin_key, against_origin));
            }
        }
        Some(SemanticChoice { parent: best.key, parent_time_ms: best.created_at_ms, kind, evidence, origin, links })
    }

    /// The earliest post of the chain of meaning that `key` ends: up its primary parents for as long
    /// as they are `paraphrase` or `summary` links to posts still in the semantic window.
    fn origin(&self, key: NodeKey) -> NodeKey {
        let mut origin = key;
        while let Some((parent, EdgeKind::Paraphrase | EdgeKind::Summary)) =
            self.graph.node(origin).and_then(|node| node.parent())
        {
            if !self.index.contains(parent) {
                break;
            }
            origin = parent;
        }
        origin
    }
}

/// Decides the kind of `evidence` by its length ratio and scores it by that kind's model; returns
/// the kind and whether the probability reaches the model's minimum.
pub(super) fn weigh(config: &SemanticConfig, evidence: &mut SemanticEvidence) -> (EdgeKind, bool) {
    evidence.is_summary = evidence.length_ratio <= config.summary_max_length_ratio;
    let (kind, model) = match evidence.is_summary {
        true => (EdgeKind::Summary, &config.summary),
        false => (EdgeKind::Paraphrase, &config.paraphrase),
    };
    evidence.score = model.probability(evidence);
    (kind, evidence.score >= model.min_probability)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::semantic::LinkModel;

    /// The decision on evidence given directly, a case each side of every boundary: the length
    /// ratio that makes a summary, and each kind's smallest probability. Tests that run the model
    /// assert only on fixtures far from these boundaries.
    #[test]
    fn the_decision_at_each_boundary_on_evidence_given_directly() {
        let semantic = &SemanticConfig::default();
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
        let decide = |cosine: f32, length_ratio: f32| weigh(semantic, &mut evidence(cosine, length_ratio));
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
}
