//! What the detector emits: rows for the `posts`, `edges`, `cascades` and `cascade_merges` datasets.
//!
//! These are plain values with no I/O; the sinks turn them into Parquet rows, Kafka messages and JSON.
//! Their columns are documented in `schemas/README.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a post derives from its parent. The names are stable: they are persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// An explicit repost (`repost_of`).
    Repost,
    /// An explicit quote (`quote_of`).
    Quote,
    /// An explicit reply (`reply_to`).
    Reply,
    /// Both posts share the same canonical URL.
    SharedUrl,
    /// The texts are near-identical: simhashes within the Hamming distance, or word sets within the
    /// Jaccard similarity of the MinHash LSH.
    NearDuplicate,
    /// Similar meaning at a similar length (sentence embeddings and word overlap).
    Paraphrase,
    /// Clearly shorter and semantically contained: a summary, possibly of a summary.
    Summary,
}

impl EdgeKind {
    /// The persisted name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Repost => "repost",
            EdgeKind::Quote => "quote",
            EdgeKind::Reply => "reply",
            EdgeKind::SharedUrl => "shared_url",
            EdgeKind::NearDuplicate => "near_duplicate",
            EdgeKind::Paraphrase => "paraphrase",
            EdgeKind::Summary => "summary",
        }
    }

    /// Every kind, in order of precedence for the primary parent.
    pub const ALL: [EdgeKind; 7] = [
        EdgeKind::Repost,
        EdgeKind::Quote,
        EdgeKind::Reply,
        EdgeKind::SharedUrl,
        EdgeKind::NearDuplicate,
        EdgeKind::Paraphrase,
        EdgeKind::Summary,
    ];

    /// Whether the kind was found by meaning (embeddings) rather than by ids or text.
    pub fn is_semantic(self) -> bool {
        matches!(self, EdgeKind::Paraphrase | EdgeKind::Summary)
    }

    /// The version of the evidence that produced an edge of this kind.
    pub fn evidence_version(self) -> &'static str {
        match self {
            EdgeKind::Repost | EdgeKind::Quote | EdgeKind::Reply => "explicit-v1",
            EdgeKind::SharedUrl => "url-v1",
            EdgeKind::NearDuplicate => crate::prepare::fingerprint::FINGERPRINT_NAME,
            EdgeKind::Paraphrase | EdgeKind::Summary => crate::link::semantic::SEMANTIC_EVIDENCE_NAME,
        }
    }
}

/// One processed post, as stored in `posts/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostRecord {
    /// The post's id.
    pub post_id: String,
    /// Its platform.
    pub platform: String,
    /// Its author's id.
    pub author_id: String,
    /// Its author's handle.
    pub author_handle: String,
    /// Event time.
    pub created_at: DateTime<Utc>,
    /// The original text.
    pub text: String,
    /// Language tag, if given.
    pub lang: Option<String>,
    /// The cascade it joined when processed.
    pub cascade_id: String,
    /// Its primary parent, if any.
    pub parent_id: Option<String>,
    /// How it derives from its primary parent.
    pub parent_kind: Option<EdgeKind>,
    /// Derivation depth: 0 for a root.
    pub generation: u32,
    /// Semantic hops (paraphrase or summary edges) on its path from the root: 2 for a summary of a
    /// summary.
    pub summary_depth: u32,
    /// 64-bit simhash of the normalized text.
    pub simhash: u64,
    /// Version of the fingerprint algorithm.
    pub fingerprint_version: u16,
    /// The rest of the input as it arrived (the author's account, links, mentions, references),
    /// so that the stored posts replay exactly (`echotrace backtest --data`).
    pub input: PostInput,
}

/// The parts of an input post that [`PostRecord`] does not otherwise keep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PostInput {
    /// When the author's account was created, if known.
    pub author_created_at: Option<DateTime<Utc>>,
    /// The author's follower count, if known.
    pub author_followers: Option<u64>,
    /// Whether the platform marks the author as automated, if it says.
    pub author_declared_automated: Option<bool>,
    /// URLs as posted.
    pub urls: Vec<String>,
    /// Accounts mentioned.
    pub mentions: Vec<String>,
    /// The post it reposts.
    pub repost_of: Option<String>,
    /// The post it quotes.
    pub quote_of: Option<String>,
    /// The post it replies to.
    pub reply_to: Option<String>,
}

impl PostRecord {
    /// The input post this record was made from.
    pub fn to_post(&self) -> crate::post::Post {
        crate::post::Post {
            id: self.post_id.clone(),
            platform: self.platform.clone(),
            author: crate::post::Author {
                id: self.author_id.clone(),
                handle: self.author_handle.clone(),
                created_at: self.input.author_created_at,
                followers: self.input.author_followers,
                declared_automated: self.input.author_declared_automated,
            },
            created_at: self.created_at,
            text: self.text.clone(),
            lang: self.lang.clone(),
            urls: self.input.urls.clone(),
            mentions: self.input.mentions.clone(),
            repost_of: self.input.repost_of.clone(),
            quote_of: self.input.quote_of.clone(),
            reply_to: self.input.reply_to.clone(),
        }
    }
}

/// A typed, evidenced link from a post to an earlier one, as stored in `edges/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// The deriving post.
    pub child_id: String,
    /// The post it derives from.
    pub parent_id: String,
    /// The kind of derivation.
    pub kind: EdgeKind,
    /// Whether this is the child's primary parent (each post has at most one).
    pub is_primary: bool,
    /// The child's cascade after this edge.
    pub cascade_id: String,
    /// Hamming distance between simhashes (near-duplicates found by the simhash index).
    pub hamming_distance: Option<u8>,
    /// Estimated Jaccard similarity of the word sets (near-duplicates found by MinHash LSH).
    pub jaccard: Option<f32>,
    /// Child time minus parent time, when the parent has been seen.
    pub time_delta_ms: Option<i64>,
    /// Embedding evidence (paraphrase and summary edges).
    pub semantic: Option<crate::link::semantic::SemanticEvidence>,
    /// Extra evidence, e.g. the canonical URL for `shared_url`.
    pub evidence: Option<String>,
    /// Child event time.
    pub created_at: DateTime<Utc>,
}

impl EdgeRecord {
    /// The version of the evidence behind this edge (the LSH for near-duplicates it found).
    pub fn evidence_version(&self) -> &'static str {
        match self.jaccard {
            Some(_) => crate::link::minhash::MINHASH_NAME,
            None => self.kind.evidence_version(),
        }
    }
}

/// The state of one cascade, as stored in `cascades/` (the newest row per id is current).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeRecord {
    /// The cascade's id.
    pub cascade_id: String,
    /// Its earliest post.
    pub root_post_id: String,
    /// Number of posts seen in it.
    pub size: u64,
    /// Platforms it spans, sorted.
    pub platforms: Vec<String>,
    /// Deepest generation.
    pub depth: u32,
    /// Most semantic hops (paraphrase or summary edges) on any path from the root.
    pub summary_depth: u32,
    /// Most semantic hops on any path from the root whose post is by an automated-looking account
    /// (declares automation or is freshly created): rounds of re-summarising by bots.
    #[serde(default)]
    pub automated_summary_depth: u32,
    /// Earliest event time.
    pub first_seen: DateTime<Utc>,
    /// Latest event time.
    pub last_seen: DateTime<Utc>,
}

/// A merge of two cascades caused by a bridging post, as stored in `cascade_merges/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// The cascade that no longer exists on its own.
    pub absorbed_cascade_id: String,
    /// The cascade it became part of.
    pub into_cascade_id: String,
    /// The post that linked them.
    pub bridging_post_id: String,
    /// Event time of the bridging post.
    pub merged_at: DateTime<Utc>,
}
