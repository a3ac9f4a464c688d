//! Linking by words: the near-duplicate index (simhash within `max_hamming`), the word-set index
//! (MinHash LSH, verified by estimated Jaccard and a looser simhash distance) and the shared-URL
//! index (the first post of each canonical URL), held together as `LexicalIndexes`.
//!
//! Each lookup reads the entries of the post's own keys (simhash blocks, band keys, canonical
//! URLs), which is what lets the window be split into linking shards by key ([`super::shard`],
//! [`super::lexical_shard`]). A lookup gives a [`LexicalAnswer`], the raw matches with the
//! payloads the indexes store; the detector turns it into candidates, each counting only while its
//! node is live in the graph.

use super::minhash::{MinHashIndex, SetMatch, Signature};
use super::near_dup::{NearDupIndex, NearDupMatch};
use super::shard::LinkShard;
use super::urls::{FirstShare, SharedUrlIndex};
use crate::detector::DetectorConfig;
use crate::detector::graph::NodeKey;
use crate::prepare::PreparedPost;
use crate::prepare::fingerprint::hamming;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// The lexical indexes of the window (all of them, or a linking shard's).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct LexicalIndexes {
    near_dups: NearDupIndex,
    similar_sets: MinHashIndex,
    shared_urls: SharedUrlIndex,
}

/// What a linking shard stores for a post: the XXH3 hash of its id. A match is resolved to a node
/// only when the node's event time is the match's too, so two ids with one hash would also need
/// the same millisecond to be confused.
pub fn post_key(post_id: &str) -> u64 {
    xxh3_64(post_id.as_bytes())
}

/// What the lexical window needs of a post, and all a linking shard is sent of it: its keys and
/// the facts that order and evict it: 115 bytes in postcard for a post with a signature and one
/// URL (`link::lexical_shard`'s tests), against some 2.7 KB for a prepared post with its embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkProbe {
    /// The hash of the post's id ([`post_key`]): what a linking shard stores it under.
    pub post_key: u64,
    /// The post's `created_at`, in milliseconds.
    pub created_at_ms: i64,
    /// Its simhash.
    pub simhash: u64,
    /// Whether it carries enough features to be linked by its simhash
    /// ([`PreparedPost::similar_enough`]).
    pub similar_enough: bool,
    /// Its MinHash signature, when it has one.
    pub signature: Option<Signature>,
    /// The keys of its canonical URLs ([`SharedUrlIndex::key`]), in the post's order.
    pub url_keys: Vec<u64>,
}

impl LinkProbe {
    /// The probe of `prepared`.
    pub fn of(prepared: &PreparedPost, config: &DetectorConfig) -> LinkProbe {
        LinkProbe {
            post_key: post_key(&prepared.post.id),
            created_at_ms: prepared.post.created_at.timestamp_millis(),
            simhash: prepared.fingerprint.simhash,
            similar_enough: prepared.similar_enough(config),
            signature: prepared.signature,
            url_keys: prepared.canonical_urls.iter().map(|url| SharedUrlIndex::key(url)).collect(),
        }
    }
}

/// What the lexical indexes (one whole window, or one linking shard of it) hold for a post: the
/// raw matches under its keys, with the payloads the indexes store. The answers of every shard
/// to a post, merged ([`LexicalAnswer::merge`]), are the whole window's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LexicalAnswer {
    /// The first share of each of the post's canonical URLs that the window holds.
    pub shared_urls: Vec<UrlShare>,
    /// Stored simhashes within `max_hamming` (when the post is `similar_enough`).
    pub near_duplicates: Vec<NearDupMatch>,
    /// Stored word sets with an estimated Jaccard of at least `min_jaccard` and a simhash within
    /// `max_similar_hamming`.
    pub similar_sets: Vec<SetMatch>,
}

/// The first post in the window that shared one of a post's canonical URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlShare {
    /// Which of the post's canonical URLs (its index in [`PreparedPost::canonical_urls`]).
    pub url: u32,
    /// The first share.
    pub first: FirstShare,
}

impl LexicalAnswer {
    /// Adds another shard's answer to the same post. URL shares stay in the order of the post's
    /// URLs, so that the merged answer gives the candidates of one whole window in its order.
    pub fn merge(&mut self, other: LexicalAnswer) {
        self.shared_urls.extend(other.shared_urls);
        self.shared_urls.sort_by_key(|share| share.url);
        self.near_duplicates.extend(other.near_duplicates);
        self.similar_sets.extend(other.similar_sets);
    }

    /// The answers of every shard to one post, as one, merged in the shards' order.
    pub fn merged(answers: impl IntoIterator<Item = LexicalAnswer>) -> LexicalAnswer {
        answers.into_iter().fold(LexicalAnswer::default(), |mut all, answer| {
            all.merge(answer);
            all
        })
    }

    /// Whether it holds a post by `payload` posted at `created_at_ms`: the post itself, when it
    /// was entered before (a duplicate delivery).
    pub fn holds(&self, payload: u64, created_at_ms: i64) -> bool {
        let at = |p: u64, t: i64| p == payload && t == created_at_ms;
        self.shared_urls.iter().any(|s| at(s.first.payload, s.first.created_at_ms))
            || self.near_duplicates.iter().any(|m| at(m.payload, m.created_at_ms))
            || self.similar_sets.iter().any(|m| at(m.payload, m.created_at_ms))
    }
}

impl LexicalIndexes {
    /// Empty indexes of one linking shard (all of the window for [`LinkShard::WHOLE`]);
    /// near-duplicates within `max_hamming` bits.
    pub fn new(max_hamming: u32, shard: LinkShard) -> LexicalIndexes {
        LexicalIndexes {
            near_dups: NearDupIndex::new_shard(max_hamming, shard),
            similar_sets: MinHashIndex::new_shard(shard),
            shared_urls: SharedUrlIndex::new_shard(shard),
        }
    }

    /// Fingerprints in the window.
    pub fn len(&self) -> usize {
        self.near_dups.len()
    }

    /// What the indexes hold under a post's keys: its canonical URLs' first shares, its
    /// near-duplicate simhashes (when it is `similar_enough`) and its similar word sets.
    pub fn answer(&self, probe: &LinkProbe, config: &DetectorConfig) -> LexicalAnswer {
        let shared_urls = (probe.url_keys.iter().enumerate())
            .filter_map(|(url, &key)| Some(UrlShare { url: url as u32, first: self.shared_urls.first_share(key)? }))
            .collect();
        let simhash = probe.simhash;
        let near_duplicates = if probe.similar_enough { self.near_dups.near(simhash) } else { Vec::new() };
        let similar_sets = match &probe.signature {
            Some(signature) => self
                .similar_sets
                .similar(signature, config.min_jaccard)
                .into_iter()
                .filter(|m| hamming(m.simhash, simhash) <= config.max_similar_hamming)
                .collect(),
            None => Vec::new(),
        };
        LexicalAnswer { shared_urls, near_duplicates, similar_sets }
    }

    /// Enters a post under its keys (those this shard owns), stored as `payload`: its simhash
    /// when it is `similar_enough`, its signature, and each canonical URL it shares.
    pub fn insert(&mut self, payload: u64, probe: &LinkProbe) {
        let LinkProbe { created_at_ms, simhash, .. } = *probe;
        if probe.similar_enough {
            self.near_dups.insert(simhash, payload, created_at_ms);
        }
        if let Some(signature) = probe.signature {
            self.similar_sets.insert(signature, simhash, payload, created_at_ms);
        }
        for &key in &probe.url_keys {
            self.shared_urls.record_share(key, payload, created_at_ms);
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
}
