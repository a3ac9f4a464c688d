//! Shared helpers for echotrace's benchmarks and measurement tools.

use anyhow::Context;
use std::io::BufRead;

pub mod campaigns;
pub mod embedding_cache;
pub mod heap;
pub mod instance;
pub mod synthetic;

/// Deterministic pseudo-random numbers (splitmix64), so every run measures the same inputs.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The `text` of every post in the given JSONL streams.
pub fn load_texts(paths: &[String]) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    for path in paths {
        let file = std::io::BufReader::new(std::fs::File::open(path)?);
        for line in file.lines() {
            let value: serde_json::Value = serde_json::from_str(&line?)?;
            if let Some(text) = value.get("text").and_then(|t| t.as_str()) {
                texts.push(text.to_owned());
            }
        }
    }
    Ok(texts)
}

/// `n` near-duplicate queries against `stored`: even ones are stored fingerprints with 0 to 3 random bits
/// flipped (a hit within k = 3), odd ones random fingerprints (almost always a miss).
pub fn near_dup_queries(stored: &[u64], n: usize, rng: &mut SplitMix) -> Vec<u64> {
    (0..n)
        .map(|i| {
            if i % 2 == 1 {
                return rng.next_u64();
            }
            let mut query = stored[rng.below(stored.len())];
            let flips = rng.below(4);
            let mut flipped = 0u64;
            while flipped.count_ones() < flips as u32 {
                flipped |= 1 << rng.below(64);
            }
            query ^= flipped;
            query
        })
        .collect()
}

/// The exhaustive baseline of the near-duplicate index: the positions of every fingerprint in `stored`
/// within Hamming distance `k` of `query`, by one XOR and popcount each.
pub fn exhaustive_scan(stored: &[u64], query: u64, k: u32) -> Vec<u64> {
    stored.iter().enumerate().filter(|(_, fp)| (*fp ^ query).count_ones() <= k).map(|(i, _)| i as u64).collect()
}

/// Resident memory of this process, in bytes (`/proc/self/statm`, 4 KiB pages).
pub fn resident_bytes() -> anyhow::Result<u64> {
    const PAGE_SIZE: u64 = 4096;
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("/proc/self/statm has no resident field")?.parse()?;
    Ok(pages * PAGE_SIZE)
}

/// The `q` quantile (nearest rank) of sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}
