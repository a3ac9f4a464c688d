//! The near-duplicate index: every earlier fingerprint within Hamming distance `k`, without a scan.
//!
//! Manku, Jain & Das Sarma (2007): split the 64 bits into `k + 1` blocks; two fingerprints that differ
//! in at most `k` bits agree exactly on at least one block (pigeonhole). One table per block, keyed by
//! (up to 16 bits of) that block, so a query reads `k + 1` buckets and verifies each entry with one
//! XOR and popcount. At k = 3 that is 4 tables of 65,536 buckets: a 10M-post window leaves about 150
//! entries per bucket.
//!
//! A linking shard ([`NearDupIndex::new_shard`]) holds only the buckets it owns, keyed by table and
//! bucket: the owner of a bucket holds all of it, so the shards together answer as one index.
//!
//! Memory is bounded by the window, not by history: entries live in a ring in arrival order, and
//! [`NearDupIndex::evict_before`] drops the oldest, removing each from the front of its buckets (each
//! bucket is in arrival order too, so that is a pop, not a search). A post costs 12 bytes per table
//! plus 24 in the ring: 72 bytes at k = 3, plus the spare capacity of the queues, which grow by a
//! quarter at a time (`push_growing_gently`) instead of doubling: doubling left buckets two-thirds
//! full on average and measured 113 bytes per post at 10M; see `benches/README.md`.

use crate::link::shard::LinkShard;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;

/// Matches read per table and query; see [`NearDupIndex::for_each_near`].
pub const MAX_MATCHES_PER_TABLE: usize = 64;

/// A fingerprint found near a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearDupMatch {
    /// What the caller stored with the fingerprint (the graph's node id).
    pub payload: u64,
    /// Differing bits.
    pub distance: u32,
    /// Event time of the stored post, in milliseconds since the epoch.
    pub created_at_ms: i64,
}

/// One bucket entry. Packed to 12 bytes: this is the bulk of the index's memory.
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct Slot {
    simhash: u64,
    seq: u32,
}

/// One arrival, in the ring.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Live {
    simhash: u64,
    payload: u64,
    created_at_ms: i64,
}

/// One block arrangement: which bits key the buckets.
#[derive(Clone)]
struct Table {
    shift: u32,
    key_bits: u32,
    buckets: Vec<VecDeque<Slot>>,
}

impl Table {
    fn bucket_of(&self, simhash: u64) -> usize {
        ((simhash >> self.shift) & ((1u64 << self.key_bits) - 1)) as usize
    }
}

/// Hamming-distance index over a time window of fingerprints.
#[derive(Clone)]
pub struct NearDupIndex {
    max_distance: u32,
    /// The (table, bucket) keys this index holds: all of them, or a linking shard's.
    shard: LinkShard,
    tables: Vec<Table>,
    ring: VecDeque<Live>,
    /// Sequence number of `ring[0]`; sequence numbers wrap, which is safe while the ring holds fewer
    /// than 2^31 entries.
    base_seq: u32,
}

impl NearDupIndex {
    /// An empty index answering queries up to `max_distance` differing bits (0 to 15).
    pub fn new(max_distance: u32) -> NearDupIndex {
        NearDupIndex::new_shard(max_distance, LinkShard::WHOLE)
    }

    /// An empty index of one linking shard: it holds and answers from the buckets it owns, keyed
    /// by table and bucket ([`crate::link::shard`]).
    pub fn new_shard(max_distance: u32, shard: LinkShard) -> NearDupIndex {
        assert!(max_distance < 16, "max_distance must be below 16, got {max_distance}");
        let blocks = max_distance + 1;
        let mut tables = Vec::with_capacity(blocks as usize);
        let mut start = 0;
        for block in 0..blocks {
            // Spread 64 bits over the blocks as evenly as possible.
            let width = 64 / blocks + u32::from(block < 64 % blocks);
            let key_bits = width.min(16);
            tables.push(Table {
                shift: start + width - key_bits,
                key_bits,
                buckets: (0..1usize << key_bits).map(|_| VecDeque::new()).collect(),
            });
            start += width;
        }
        NearDupIndex { max_distance, shard, tables, ring: VecDeque::new(), base_seq: 0 }
    }

    /// Whether this index holds `simhash`'s bucket of table `t`.
    fn owns(&self, t: usize, simhash: u64) -> bool {
        self.shard.owns(((t as u64) << 32) | self.tables[t].bucket_of(simhash) as u64)
    }

    /// The configured maximum distance.
    pub fn max_distance(&self) -> u32 {
        self.max_distance
    }

    /// Number of fingerprints in the window.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Adds a fingerprint with its payload and event time (to a shard, under the buckets it owns;
    /// not at all when it owns none of them).
    pub fn insert(&mut self, simhash: u64, payload: u64, created_at_ms: i64) {
        // One bit per table (at most 16 tables).
        let owned = (0..self.tables.len()).filter(|&t| self.owns(t, simhash)).fold(0u16, |mask, t| mask | 1 << t);
        if owned == 0 {
            return;
        }
        let seq = self.base_seq.wrapping_add(self.ring.len() as u32);
        push_growing_gently(&mut self.ring, Live { simhash, payload, created_at_ms });
        for (t, table) in self.tables.iter_mut().enumerate() {
            if owned & 1 << t == 0 {
                continue;
            }
            let bucket = table.bucket_of(simhash);
            push_growing_gently(&mut table.buckets[bucket], Slot { simhash, seq });
        }
    }

    /// Calls `found` for the stored fingerprints within the maximum distance of `simhash`.
    ///
    /// Each table reads its bucket oldest first and stops after [`MAX_MATCHES_PER_TABLE`] matches:
    /// a campaign of thousands of exact copies fills one bucket with them, and reading them all would
    /// make every new copy cost as much as the campaign is large. The earliest copies are the ones a
    /// new copy links to anyway.
    pub fn for_each_near(&self, simhash: u64, mut found: impl FnMut(NearDupMatch)) {
        let live = self.ring.len() as u32;
        for (t, table) in self.tables.iter().enumerate() {
            // A shard answers for the buckets it owns; their owners answer for the rest.
            if !self.owns(t, simhash) {
                continue;
            }
            let mut matches = 0;
            for slot in &table.buckets[table.bucket_of(simhash)] {
                let (stored, seq) = (slot.simhash, slot.seq);
                let distance = (stored ^ simhash).count_ones();
                if distance > self.max_distance {
                    continue;
                }
                matches += 1;
                if matches > MAX_MATCHES_PER_TABLE {
                    break;
                }
                // A pair matching in several tables is reported by the first one only.
                if self.tables[..t].iter().any(|earlier| earlier.bucket_of(stored) == earlier.bucket_of(simhash)) {
                    continue;
                }
                let offset = seq.wrapping_sub(self.base_seq);
                if offset < live {
                    let entry = self.ring[offset as usize];
                    found(NearDupMatch { payload: entry.payload, distance, created_at_ms: entry.created_at_ms });
                }
            }
        }
    }

    /// The stored fingerprints within the maximum distance of `simhash` (see [`Self::for_each_near`]).
    pub fn near(&self, simhash: u64) -> Vec<NearDupMatch> {
        let mut out = Vec::new();
        self.for_each_near(simhash, |m| out.push(m));
        out
    }

    /// Drops every entry that arrived before the first one with an event time at or after `cutoff_ms`.
    /// Returns how many were evicted.
    pub fn evict_before(&mut self, cutoff_ms: i64) -> usize {
        self.evict_front_while(|live| live.created_at_ms < cutoff_ms)
    }

    /// Drops every entry whose payload (a node key, given in arrival order) is below `first_kept`.
    pub fn evict_payloads_below(&mut self, first_kept: u64) -> usize {
        self.evict_front_while(|live| live.payload < first_kept)
    }

    fn evict_front_while(&mut self, evict: impl Fn(&Live) -> bool) -> usize {
        let mut evicted = 0;
        while let Some(front) = self.ring.front().copied() {
            if !evict(&front) {
                break;
            }
            self.ring.pop_front();
            for t in 0..self.tables.len() {
                if !self.owns(t, front.simhash) {
                    continue;
                }
                let table = &mut self.tables[t];
                let bucket = table.bucket_of(front.simhash);
                let queue = &mut table.buckets[bucket];
                // Buckets are in arrival order, so the evicted entry is at the front.
                debug_assert!(queue.front().is_some_and(|slot| { slot.seq } == self.base_seq));
                queue.pop_front();
            }
            self.base_seq = self.base_seq.wrapping_add(1);
            evicted += 1;
        }
        evicted
    }

    /// Bucket entries held, over all tables.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.tables.iter().map(|t| t.buckets.iter().map(VecDeque::len).sum::<usize>()).sum()
    }

    /// Releases spare capacity after a large eviction.
    pub fn shrink_to_fit(&mut self) {
        self.ring.shrink_to_fit();
        for table in &mut self.tables {
            table.buckets.iter_mut().for_each(VecDeque::shrink_to_fit);
        }
    }
}

/// A snapshot holds the ring alone: the tables are the ring indexed by block, and restoring
/// re-inserts it in arrival order, which gives the same buckets in the same order (and, unlike
/// the packed slots, serializes with no unaligned references).
impl Serialize for NearDupIndex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.max_distance, self.shard, self.base_seq, &self.ring).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NearDupIndex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NearDupIndex, D::Error> {
        let (max_distance, shard, base_seq, ring): (u32, LinkShard, u32, Vec<Live>) =
            Deserialize::deserialize(deserializer)?;
        if max_distance >= 16 {
            return Err(D::Error::custom(format!("near-duplicate distance {max_distance} is over 15")));
        }
        let mut index = NearDupIndex::new_shard(max_distance, shard);
        index.base_seq = base_seq;
        index.ring.reserve_exact(ring.len());
        for live in ring {
            index.insert(live.simhash, live.payload, live.created_at_ms);
        }
        Ok(index)
    }
}

/// Appends, growing a full queue by a quarter rather than letting `VecDeque` double it: the window's
/// queues are long-lived and near their final size, so spare capacity is memory wasted, and 1.25x
/// growth still copies each element a bounded number of times on average.
pub(crate) fn push_growing_gently<T>(queue: &mut VecDeque<T>, value: T) {
    if queue.len() == queue.capacity() {
        queue.reserve_exact(queue.len() / 4 + 4);
    }
    queue.push_back(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random fingerprints (splitmix64).
    fn random_fingerprints(n: usize, mut state: u64) -> Vec<u64> {
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    #[test]
    fn finds_exactly_what_an_exhaustive_scan_finds() {
        for k in [0, 1, 3, 5] {
            let stored = random_fingerprints(20_000, 7);
            let mut index = NearDupIndex::new(k);
            for (i, &fp) in stored.iter().enumerate() {
                index.insert(fp, i as u64, i as i64);
            }
            // Queries: stored fingerprints with 0..=k+1 bits flipped, and random ones.
            let mut queries: Vec<u64> = stored
                .iter()
                .take(500)
                .enumerate()
                .map(|(i, fp)| fp ^ ((1u64 << (i % (k as usize + 2))) - 1) << (i % 40))
                .collect();
            queries.extend(random_fingerprints(500, 99));
            for q in queries {
                let mut got: Vec<u64> = index.near(q).iter().map(|m| m.payload).collect();
                got.sort_unstable();
                let expected: Vec<u64> = stored
                    .iter()
                    .enumerate()
                    .filter(|(_, fp)| (*fp ^ q).count_ones() <= k)
                    .map(|(i, _)| i as u64)
                    .collect();
                assert_eq!(got, expected, "k={k} query={q:#x}");
            }
        }
    }

    #[test]
    fn a_flood_of_copies_reads_only_the_earliest() {
        let mut index = NearDupIndex::new(3);
        for i in 0..10_000 {
            index.insert(0xDEAD_BEEF, i, i as i64);
        }
        let found: Vec<u64> = index.near(0xDEAD_BEEF).iter().map(|m| m.payload).collect();
        assert_eq!(found, (0..MAX_MATCHES_PER_TABLE as u64).collect::<Vec<_>>());
    }

    #[test]
    fn eviction_bounds_the_window() {
        let mut index = NearDupIndex::new(3);
        for (i, fp) in random_fingerprints(1000, 1).into_iter().enumerate() {
            index.insert(fp, i as u64, i as i64 * 1000);
        }
        assert_eq!(index.evict_before(500_000), 500);
        assert_eq!(index.len(), 500);
        let fps = random_fingerprints(1000, 1);
        assert!(index.near(fps[10]).is_empty(), "evicted entries are gone");
        assert_eq!(index.near(fps[900])[0].payload, 900);
        let buckets: usize = index.tables.iter().map(|t| t.buckets.iter().map(VecDeque::len).sum::<usize>()).sum();
        assert_eq!(buckets, 500 * 4, "no stale slots left behind");
    }

    #[test]
    fn sequence_numbers_wrap_safely() {
        let mut index = NearDupIndex::new(2);
        index.base_seq = u32::MAX - 5;
        for (i, fp) in random_fingerprints(20, 3).into_iter().enumerate() {
            index.insert(fp, i as u64, i as i64);
        }
        index.evict_before(10);
        let fps = random_fingerprints(20, 3);
        assert_eq!(index.near(fps[15])[0].payload, 15);
    }
}
