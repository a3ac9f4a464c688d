//! Which linking shard owns a lookup key, so that the lexical indexes can be split across
//! processes with nothing lost.
//!
//! Every lexical lookup is an exact-key read: a simhash table's bucket (two fingerprints within
//! distance `k` agree on at least one whole block, so they meet in that block's bucket), a MinHash
//! band key, a canonical URL. An index built for a [`LinkShard`] enters a post only under the
//! keys it owns and answers a lookup only for them, as if each of the post's keys were sent to
//! its owner alone. The owner of a key holds every entry under it, in the same order as one whole
//! index, so the union of the owners' answers to a post is the whole index's answer
//! (`tests::the_union_of_the_shards_is_the_whole_index`). A post's bucket and chain entries are
//! spread over the shards by key, so each holds about `1 / count` of them and does `1 / count` of
//! the lookups; but the post itself (its ring entry and, for MinHash, the whole signature that
//! band matches are verified against) is held by every shard that owns one of its keys, so the
//! shards together hold more than one index (`benches/README.md`: 3.7 times at 16 shards).
//!
//! Eviction by node key ([`NearDupIndex::evict_payloads_below`] and the like) drops the same
//! entries from the shards as from one index. Eviction by event time pops each ring from its front
//! while entries are older than the cutoff, so one index keeps a late post behind a newer one that
//! a shard may not hold: there the equality holds for posts in event-time order, which is what the
//! order across partitions delivers, and a late post can leave a shard sooner.
//!
//! [`NearDupIndex::evict_payloads_below`]: crate::link::near_dup::NearDupIndex::evict_payloads_below
//!
//! Ownership is `xxh3(key) mod count`: pinned, so that every process of a deployment, and every
//! release, agrees on it.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// One shard of `count`: the lookup keys whose hash is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardNumbers")]
pub struct LinkShard {
    index: u32,
    count: u32,
}

/// A shard as stored, checked by [`LinkShard::new`] when it is read back.
#[derive(Deserialize)]
struct ShardNumbers {
    index: u32,
    count: u32,
}

impl TryFrom<ShardNumbers> for LinkShard {
    type Error = String;

    fn try_from(stored: ShardNumbers) -> Result<LinkShard, String> {
        LinkShard::new(stored.index, stored.count)
    }
}

impl Default for LinkShard {
    fn default() -> LinkShard {
        LinkShard::WHOLE
    }
}

impl LinkShard {
    /// The one shard that owns every key: the index of a single process.
    pub const WHOLE: LinkShard = LinkShard { index: 0, count: 1 };

    /// Shard `index` of `count` (`index < count`).
    pub fn new(index: u32, count: u32) -> Result<LinkShard, String> {
        if index >= count {
            return Err(format!("linking shard {index} of {count}: the index must be below the count"));
        }
        Ok(LinkShard { index, count })
    }

    /// Every shard of `count`, in order.
    pub fn all(count: u32) -> impl Iterator<Item = LinkShard> {
        (0..count).map(move |index| LinkShard { index, count })
    }

    /// Whether this shard owns `key`.
    pub fn owns(&self, key: u64) -> bool {
        self.count == 1 || xxh3_64(&key.to_le_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::minhash::{MinHashIndex, SIGNATURE_LEN, Signature};
    use crate::link::near_dup::NearDupIndex;
    use crate::link::urls::SharedUrlIndex;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// One post of the generated streams: its simhash, its signature, the URL it shares.
    #[derive(Debug, Clone)]
    struct Entry {
        simhash: u64,
        signature: Signature,
        url: String,
    }

    /// Posts drawn around a few originals, so that near-duplicates, shared bands and shared URLs
    /// are common: each is an original's simhash with up to 5 bits flipped, its signature with
    /// some rows replaced, and one of 8 URLs.
    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        let originals = prop::collection::vec((any::<u64>(), prop::array::uniform18(0u32..1_000)), 1..6);
        originals.prop_flat_map(|originals| {
            let count = originals.len();
            let post = (0..count, prop::collection::vec(0u32..64, 0..6), any::<[bool; SIGNATURE_LEN]>(), 0u8..8)
                .prop_map(move |(of, flips, replaced, url)| {
                    let (simhash, signature) = originals[of];
                    let simhash = flips.iter().fold(simhash, |h, bit| h ^ (1 << bit));
                    let mut signature = signature;
                    for (row, replace) in signature.iter_mut().zip(replaced) {
                        if replace {
                            *row = row.wrapping_add(1_000 + of as u32);
                        }
                    }
                    Entry { simhash, signature, url: format!("https://news.example/story/{url}") }
                });
            prop::collection::vec(post, 1..120)
        })
    }

    /// The near-duplicate, MinHash and URL indexes of one shard.
    struct Indexes {
        near_dups: NearDupIndex,
        similar_sets: MinHashIndex,
        shared_urls: SharedUrlIndex,
    }

    impl Indexes {
        fn new(shard: LinkShard) -> Indexes {
            Indexes {
                near_dups: NearDupIndex::new_shard(3, shard),
                similar_sets: MinHashIndex::new_shard(shard),
                shared_urls: SharedUrlIndex::new_shard(shard),
            }
        }

        fn insert(&mut self, entry: &Entry, payload: u64) {
            let at = payload as i64;
            self.near_dups.insert(entry.simhash, payload, at);
            self.similar_sets.insert(entry.signature, entry.simhash, payload, at);
            self.shared_urls.record_share(SharedUrlIndex::key(&entry.url), payload, at);
        }

        fn evict(&mut self, cutoff: i64, first_kept: u64) {
            self.near_dups.evict_before(cutoff);
            self.similar_sets.evict_before(cutoff);
            self.shared_urls.evict_before(cutoff);
            self.near_dups.evict_payloads_below(first_kept);
            self.similar_sets.evict_payloads_below(first_kept);
            self.shared_urls.evict_payloads_below(first_kept);
        }

        /// Every answer to `entry`, as comparable tuples: (index, payload, distance or Jaccard in
        /// thousandths).
        fn answers(&self, entry: &Entry) -> BTreeSet<(&'static str, u64, u32)> {
            let mut answers = BTreeSet::new();
            self.near_dups.for_each_near(entry.simhash, |m| {
                answers.insert(("simhash", m.payload, m.distance));
            });
            for m in self.similar_sets.similar(&entry.signature, 0.3) {
                answers.insert(("minhash", m.payload, (m.jaccard * 1000.0) as u32));
            }
            if let Some(first) = self.shared_urls.first_share(SharedUrlIndex::key(&entry.url)) {
                answers.insert(("url", first.payload, 0));
            }
            answers
        }

        /// Bucket, chain and URL entries held.
        fn entries_held(&self) -> usize {
            self.near_dups.slots() + self.similar_sets.band_links() + self.shared_urls.len()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Posts arrive in event-time order (as the order across partitions delivers them), are
        /// looked up then inserted, and the window is evicted by time and by node key now and
        /// then: at every lookup, the union of the shards' answers is the whole index's answer
        /// (a pair sharing two MinHash bands of different owners is answered by both), and each
        /// bucket, chain and URL entry is held by one shard.
        #[test]
        fn the_union_of_the_shards_is_the_whole_index(
            stream in entries(),
            count in 2u32..6,
            window in 5i64..60,
            evict_every in 1usize..20,
        ) {
            let mut whole = Indexes::new(LinkShard::WHOLE);
            let mut shards: Vec<Indexes> = LinkShard::all(count).map(Indexes::new).collect();
            for (i, entry) in stream.iter().enumerate() {
                let payload = i as u64;
                let expected = whole.answers(entry);
                let mut union = BTreeSet::new();
                for shard in &shards {
                    for answer in shard.answers(entry) {
                        union.insert(answer);
                    }
                }
                prop_assert_eq!(&union, &expected, "post {}", i);
                whole.insert(entry, payload);
                shards.iter_mut().for_each(|shard| shard.insert(entry, payload));
                if i % evict_every == 0 {
                    let cutoff = payload as i64 - window;
                    let first_kept = payload.saturating_sub(window as u64 * 2);
                    whole.evict(cutoff, first_kept);
                    shards.iter_mut().for_each(|shard| shard.evict(cutoff, first_kept));
                }
            }
            let held: usize = shards.iter().map(Indexes::entries_held).sum();
            prop_assert_eq!(held, whole.entries_held(), "each bucket, chain and URL entry is held by one shard");
        }
    }

    #[test]
    fn a_shard_index_must_be_below_the_count() {
        assert!(LinkShard::new(3, 3).is_err());
        assert_eq!(LinkShard::new(0, 1), Ok(LinkShard::WHOLE));
    }

    #[test]
    fn the_shards_split_the_keys_about_evenly() {
        let owned: Vec<usize> =
            LinkShard::all(4).map(|shard| (0..40_000u64).filter(|&key| shard.owns(key)).count()).collect();
        assert_eq!(owned.iter().sum::<usize>(), 40_000, "every key has exactly one owner");
        assert!(owned.iter().all(|&n| (9_500..10_500).contains(&n)), "{owned:?}");
    }
}
