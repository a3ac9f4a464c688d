//! MinHash LSH beside the simhash index, for light edits of short posts.
//!
//! A 64-bit simhash of a one-sentence post moves by 6 to 13 bits when one word changes (each bit is
//! a sum of about 15 ±1 terms, and one term flips it whenever the sum is near zero), so at k = 3 the
//! Hamming index links only about 11% of single-word edits (measured: `neardup-recall`, see
//! `docs/near-duplicates.md`). MinHash estimates the Jaccard similarity of the feature *sets*, which a
//! one-word edit of a 15-word post barely moves (about 0.88). Banding (`BANDS` bands of `ROWS` rows)
//! turns it into exact-key lookups: a pair with Jaccard J becomes a candidate with probability
//! 1 - (1 - J^ROWS)^BANDS (0.99 at J = 0.8, 0.15 at J = 0.3); candidates are then verified by the
//! estimated Jaccard over the whole signature and, since 18 hashes estimate J only to about ±0.11,
//! by the simhash distance too (the detector's `max_similar_hamming`): both must agree.
//!
//! Written here rather than taken from a crate because it must hash with the same pinned feature
//! hashes as the fingerprint (stable across releases, so state can be snapshotted and restored) and
//! evict by event-time window in arrival order like the Hamming index; it is about a hundred lines.

use crate::link::near_dup::push_growing_gently;
use crate::link::shard::LinkShard;
use crate::prepare::fingerprint::{Features, SHINGLING_V1, Shingling};
use crate::prepare::normalize::NormalizedText;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Name and version of the LSH evidence, recorded on the edges it finds.
pub const MINHASH_NAME: &str = "minhash-lsh-v1";
/// Entries read per band and query, newest first. A campaign of thousands of copies shares its band
/// keys; reading them all would make each copy cost as much as the campaign is large. The newest 32
/// are enough to find a parent, and keep a lookup's cost flat.
pub const MAX_CHAIN_PER_BAND: usize = 32;
/// Bands of the LSH.
pub const BANDS: usize = 6;
/// Rows (hash functions) per band.
pub const ROWS: usize = 3;
/// Hash functions in a signature.
pub const SIGNATURE_LEN: usize = BANDS * ROWS;
/// Features of the set: the fingerprint's own (words as unigrams, CJK as character bigrams), so one
/// [`Features`] serves both.
const SET_SHINGLING: Shingling = SHINGLING_V1;

/// A MinHash signature: the minimum of each of `SIGNATURE_LEN` hash functions over the feature set.
pub type Signature = [u32; SIGNATURE_LEN];

/// The signature of a normalized text, or `None` when it has no features.
pub fn signature(text: &NormalizedText) -> Option<Signature> {
    signature_of(&Features::with(text, SET_SHINGLING))
}

/// The signature of a text's features ([`Features::of`]), or `None` when it has none. The minimum
/// over a set is the minimum over any list of its members, so this equals [`signature`].
pub fn signature_of(features: &Features) -> Option<Signature> {
    assert_eq!(features.shingling(), SET_SHINGLING, "a signature is over the fingerprint's features");
    let mut signature = [u32::MAX; SIGNATURE_LEN];
    for &feature in features.hashes() {
        for (i, slot) in signature.iter_mut().enumerate() {
            let hashed = (mix(feature ^ SEEDS[i]) >> 32) as u32;
            *slot = (*slot).min(hashed);
        }
    }
    (!features.hashes().is_empty()).then_some(signature)
}

/// The share of equal positions: an unbiased estimate of the Jaccard similarity of the two sets.
pub fn estimated_jaccard(a: &Signature, b: &Signature) -> f32 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f32 / SIGNATURE_LEN as f32
}

/// The murmur3 64-bit finalizer: a fixed, well-mixing permutation of 64-bit values.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Fixed per-function seeds; part of the algorithm's version.
const SEEDS: [u64; SIGNATURE_LEN] = {
    let mut seeds = [0u64; SIGNATURE_LEN];
    let mut i = 0;
    while i < SIGNATURE_LEN {
        seeds[i] = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
        i += 1;
    }
    seeds
};

fn band_key(signature: &Signature, band: usize) -> u64 {
    let rows = &signature[band * ROWS..(band + 1) * ROWS];
    rows.iter().fold(band as u64, |acc, &row| mix(acc ^ u64::from(row)))
}

/// A post found by the LSH, with its estimated similarity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SetMatch {
    /// What the caller stored (the graph's node id).
    pub payload: u64,
    /// Estimated Jaccard similarity of the feature sets.
    pub jaccard: f32,
    /// The stored post's simhash, for a second, independent check.
    pub simhash: u64,
    /// Event time of the stored post, in milliseconds.
    pub created_at_ms: i64,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    signature: Signature,
    simhash: u64,
    payload: u64,
    created_at_ms: i64,
    /// Per band, the sequence number of the next older entry with the same band key (its own
    /// sequence number when there is none): the buckets are chains through the ring.
    older: [u32; BANDS],
}

/// MinHash LSH over a time window, evicted in arrival order.
///
/// A bucket is not a collection of its own but a chain through the ring: each band's map holds the
/// newest entry of each band key, and each entry links to the next older one with the same key.
/// Inserting allocates nothing but the ring slot and (for a new key) a map entry; a bucket of
/// `VecDeque`s per key cost an allocation per key and a third of the index's time (measured).
#[derive(Clone, Serialize, Deserialize)]
pub struct MinHashIndex {
    /// The band keys this index holds: all of them, or a linking shard's.
    shard: LinkShard,
    newest: Vec<HashMap<u64, u32>>,
    ring: VecDeque<Entry>,
    base_seq: u32,
}

/// An empty index, as [`MinHashIndex::new`]: a derived default would have no band maps, and
/// would drop every insert's band keys.
impl Default for MinHashIndex {
    fn default() -> MinHashIndex {
        MinHashIndex::new()
    }
}

impl MinHashIndex {
    /// An empty index.
    pub fn new() -> MinHashIndex {
        MinHashIndex::new_shard(LinkShard::WHOLE)
    }

    /// An empty index of one linking shard: it holds and answers from the band keys it owns
    /// ([`crate::link::shard`]).
    pub fn new_shard(shard: LinkShard) -> MinHashIndex {
        MinHashIndex { shard, newest: (0..BANDS).map(|_| HashMap::new()).collect(), ring: VecDeque::new(), base_seq: 0 }
    }

    /// Number of signatures in the window.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The live entry with sequence number `seq`, if it is still in the window.
    fn live(&self, seq: u32) -> Option<&Entry> {
        self.ring.get(seq.wrapping_sub(self.base_seq) as usize)
    }

    /// Adds a signature with the post's simhash, its payload and event time (to a shard, under the
    /// band keys it owns; not at all when it owns none of them).
    pub fn insert(&mut self, signature: Signature, simhash: u64, payload: u64, created_at_ms: i64) {
        let keys: [u64; BANDS] = std::array::from_fn(|band| band_key(&signature, band));
        if !keys.iter().any(|&key| self.shard.owns(key)) {
            return;
        }
        let seq = self.base_seq.wrapping_add(self.ring.len() as u32);
        let mut older = [seq; BANDS];
        for (band, newest) in self.newest.iter_mut().enumerate() {
            if !self.shard.owns(keys[band]) {
                continue;
            }
            if let Some(previous) = newest.insert(keys[band], seq) {
                older[band] = previous;
            }
        }
        push_growing_gently(&mut self.ring, Entry { signature, simhash, payload, created_at_ms, older });
    }

    /// The stored signatures sharing a band with `signature` (at most [`MAX_CHAIN_PER_BAND`] per band,
    /// newest first) with an estimated Jaccard of at least `min_jaccard`.
    pub fn similar(&self, signature: &Signature, min_jaccard: f32) -> Vec<SetMatch> {
        let mut seqs: Vec<u32> = Vec::new();
        for (band, newest) in self.newest.iter().enumerate() {
            // A shard answers for the band keys it owns; their owners answer for the rest.
            let key = band_key(signature, band);
            if !self.shard.owns(key) {
                continue;
            }
            let mut next = newest.get(&key).copied();
            let mut read = 0;
            while let Some(seq) = next.filter(|_| read < MAX_CHAIN_PER_BAND) {
                read += 1;
                let Some(entry) = self.live(seq) else { break };
                seqs.push(seq);
                next = (entry.older[band] != seq).then_some(entry.older[band]);
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        seqs.into_iter()
            .filter_map(|seq| self.live(seq))
            .map(|entry| SetMatch {
                payload: entry.payload,
                jaccard: estimated_jaccard(signature, &entry.signature),
                simhash: entry.simhash,
                created_at_ms: entry.created_at_ms,
            })
            .filter(|m| m.jaccard >= min_jaccard)
            .collect()
    }

    /// Band-chain links held: an entry's bands whose keys this index owns.
    #[cfg(test)]
    pub(crate) fn band_links(&self) -> usize {
        let owned_bands =
            |entry: &Entry| (0..BANDS).filter(|&b| self.shard.owns(band_key(&entry.signature, b))).count();
        self.ring.iter().map(owned_bands).sum()
    }

    /// Drops every entry that arrived before the first one at or after `cutoff_ms`.
    pub fn evict_before(&mut self, cutoff_ms: i64) -> usize {
        self.evict_front_while(|entry| entry.created_at_ms < cutoff_ms)
    }

    /// Drops every entry whose payload (a node key, given in arrival order) is below `first_kept`.
    pub fn evict_payloads_below(&mut self, first_kept: u64) -> usize {
        self.evict_front_while(|entry| entry.payload < first_kept)
    }

    fn evict_front_while(&mut self, evict: impl Fn(&Entry) -> bool) -> usize {
        let mut evicted = 0;
        while self.ring.front().is_some_and(&evict) {
            let entry = self.ring.pop_front().expect("checked");
            let seq = self.base_seq;
            for (band, newest) in self.newest.iter_mut().enumerate() {
                let key = band_key(&entry.signature, band);
                // Older entries of the key are gone already; if this was the newest, the key is too.
                if newest.get(&key) == Some(&seq) {
                    newest.remove(&key);
                }
            }
            self.base_seq = self.base_seq.wrapping_add(1);
            evicted += 1;
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::fingerprint::for_each_feature;
    use crate::prepare::normalize::normalize;
    use proptest::prelude::*;

    fn sig(text: &str) -> Signature {
        signature(&normalize(text)).expect("has features")
    }

    /// Signatures are stored in snapshots: this is how they were computed before the fingerprint's
    /// deduplicated features were shared with them, over every feature occurrence.
    fn signature_over_every_occurrence(text: &NormalizedText) -> Option<Signature> {
        let mut signature = [u32::MAX; SIGNATURE_LEN];
        let mut any = false;
        for_each_feature(text, SET_SHINGLING, |feature| {
            any = true;
            for (i, slot) in signature.iter_mut().enumerate() {
                *slot = (*slot).min((mix(feature ^ SEEDS[i]) >> 32) as u32);
            }
        });
        any.then_some(signature)
    }

    proptest! {
        #[test]
        fn shared_features_give_the_same_signature(text in "\\PC{0,60}|([a-z]{1,4} ){0,30}|[\u{4E00}-\u{4E10}]{0,20}") {
            let normalized = normalize(&text);
            let expected = signature_over_every_occurrence(&normalized);
            prop_assert_eq!(signature_of(&Features::of(&normalized)), expected);
            prop_assert_eq!(signature(&normalized), expected);
        }
    }

    #[test]
    fn light_edits_are_found_and_unrelated_posts_are_not() {
        let mut index = MinHashIndex::new();
        index.insert(sig("the harbour bridge closes tonight at nine for repairs says the city council"), 0, 1, 0);
        index.insert(sig("our team finally won the derby after twelve long years of waiting"), 0, 2, 1);
        let found = index
            .similar(&sig("the harbour bridge closes tonight at nine for urgent repairs says the city council"), 0.5);
        assert_eq!(found.iter().map(|m| m.payload).collect::<Vec<_>>(), [1]);
        assert!(found[0].jaccard > 0.7);
        assert!(index.similar(&sig("a completely different sentence about cooking pasta with garlic"), 0.5).is_empty());
    }

    #[test]
    fn eviction_empties_the_buckets() {
        let mut index = MinHashIndex::new();
        for i in 0..100 {
            index.insert(sig(&format!("post number {i} about the weather in town {}", i * 7)), 0, i, i as i64);
        }
        assert_eq!(index.evict_before(60), 60);
        assert_eq!(index.len(), 40);
        let keys: usize = index.newest.iter().map(HashMap::len).sum();
        let live_keys: std::collections::HashSet<(usize, u64)> =
            index.ring.iter().flat_map(|e| (0..BANDS).map(move |b| (b, band_key(&e.signature, b)))).collect();
        assert_eq!(keys, live_keys.len(), "exactly the keys of live entries remain");
        assert!(index.similar(&sig("post number 3 about the weather in town 21"), 0.9).is_empty());
        assert_eq!(index.similar(&sig("post number 80 about the weather in town 560"), 0.9)[0].payload, 80);
    }

    #[test]
    fn the_default_index_finds_what_it_holds() {
        let mut index = MinHashIndex::default();
        index.insert(sig("the harbour bridge closes tonight for repairs"), 0, 7, 0);
        assert_eq!(index.similar(&sig("the harbour bridge closes tonight for repairs"), 0.9)[0].payload, 7);
    }

    #[test]
    fn signatures_are_stable() {
        assert_eq!(sig("stable signature")[0], sig("Stable, signature!")[0]);
    }
}
