//! Stable, versioned 64-bit simhash (Charikar 2002) over the shingles of a normalized text.
//!
//! Fingerprints are persisted (the `simhash` column) and compared across releases, so every input to
//! them is pinned: features are hashed with XXH3-64 over their UTF-8 bytes (a specified algorithm,
//! fixed seed). The `simhash` crate feeds words to its hasher through `std::hash::Hash`, whose byte
//! stream std does not promise to keep between compiler versions, and splits on whitespace only (no
//! normalization, no CJK n-grams), so it cannot promise stable fingerprints; this module is the small
//! amount of code it takes to do so (see `docs/near-duplicates.md`). `tests::golden_fingerprints` pins the output: if it
//! fails, the algorithm changed, and [`FINGERPRINT_VERSION`] must be bumped with a migration note.
//!
//! Features (chosen by measurement, see `docs/near-duplicates.md`): each word as a unigram; CJK text as
//! character bigrams (a lone character as itself). Unigrams move the fingerprint least under light
//! edits; CJK single characters carry too little meaning and link unrelated posts 4x as often.
//!
//! Each distinct feature counts once (version 2). Version 1 counted repeats, so in a long text the
//! most frequent words ("the", "of", "to") outvoted everything else and unrelated 600-word articles
//! landed within Hamming distance 3 of each other; short posts, which rarely repeat a word, have the
//! same fingerprint in both versions. Version 3 fingerprints texts as the normalizer reads them
//! since it drops invisible characters and reads Latin look-alikes in mixed-script words as Latin
//! ([`mod@crate::prepare::normalize`]); texts without those have the same fingerprint as in version 2.

use crate::prepare::normalize::{NormalizedText, Script};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Version of the fingerprint algorithm, persisted next to every fingerprint.
pub const FINGERPRINT_VERSION: u16 = 3;
/// Name of the algorithm and version, recorded as edge evidence.
pub const FINGERPRINT_NAME: &str = "simhash-v3";
/// Seed of the feature hash; part of the versioned algorithm.
const FEATURE_SEED: u64 = 0x6563_686f_7472_6163; // "echotrac"

/// How a normalized text is cut into features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shingling {
    /// Longest word n-gram used; every n from 1 to this is a feature.
    pub max_word_ngram: usize,
    /// Length of CJK character n-grams.
    pub cjk_ngram: usize,
}

/// The shingling of fingerprint version 1.
pub const SHINGLING_V1: Shingling = Shingling { max_word_ngram: 1, cjk_ngram: 2 };

/// A text's fingerprint and how much evidence went into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// The 64-bit simhash.
    pub simhash: u64,
    /// Number of features hashed; short texts carry too little evidence to be linked by similarity.
    pub features: u32,
}

/// The distinct feature hashes of a normalized text, sorted: what its simhash and its MinHash
/// signature ([`crate::link::minhash::signature_of`]) are both computed from, so a post's features
/// are hashed once for the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    hashes: Vec<u64>,
    shingling: Shingling,
}

impl Features {
    /// The features of a normalized text with the current version's shingling.
    pub fn of(text: &NormalizedText) -> Features {
        Features::with(text, SHINGLING_V1)
    }

    /// The features of a normalized text with the given shingling (for measuring alternatives).
    pub fn with(text: &NormalizedText, shingling: Shingling) -> Features {
        let mut hashes = Vec::with_capacity(text.len());
        for_each_feature(text, shingling, |hash| hashes.push(hash));
        hashes.sort_unstable();
        hashes.dedup();
        Features { hashes, shingling }
    }

    /// The distinct feature hashes, ascending.
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    /// The shingling they were cut with.
    pub fn shingling(&self) -> Shingling {
        self.shingling
    }

    /// The simhash of these features.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut counts = [0i32; 64];
        for hash in &self.hashes {
            for (bit, count) in counts.iter_mut().enumerate() {
                // Branch-free ±1 so the loop vectorizes.
                *count += (((hash >> bit) & 1) as i32) * 2 - 1;
            }
        }
        let features = self.hashes.len() as u32;
        let simhash = counts.iter().enumerate().fold(0u64, |acc, (bit, &count)| acc | (u64::from(count > 0) << bit));
        Fingerprint { simhash, features }
    }
}

/// Fingerprints a normalized text with the current version's shingling.
pub fn fingerprint(text: &NormalizedText) -> Fingerprint {
    Features::of(text).fingerprint()
}

/// Fingerprints a normalized text with the given shingling (for measuring alternatives).
pub fn fingerprint_with(text: &NormalizedText, shingling: Shingling) -> Fingerprint {
    Features::with(text, shingling).fingerprint()
}

/// Calls `emit` with the hash of every feature of the text.
pub fn for_each_feature(text: &NormalizedText, shingling: Shingling, mut emit: impl FnMut(u64)) {
    let mut run: Vec<u64> = Vec::with_capacity(text.len());
    let mut run_script = None;
    for (token, script) in text.tokens() {
        if run_script != Some(script) {
            emit_run(&run, run_script, shingling, &mut emit);
            run.clear();
            run_script = Some(script);
        }
        run.push(xxh3_64_with_seed(token.as_bytes(), FEATURE_SEED));
    }
    emit_run(&run, run_script, shingling, &mut emit);
}

/// Emits the n-grams of one run of same-script tokens.
fn emit_run(run: &[u64], script: Option<Script>, shingling: Shingling, emit: &mut impl FnMut(u64)) {
    match script {
        None => {}
        Some(Script::Word) => {
            for n in 1..=shingling.max_word_ngram.min(run.len()) {
                run.windows(n).for_each(|gram| emit(hash_gram(gram)));
            }
        }
        Some(Script::Cjk) => {
            let n = shingling.cjk_ngram.min(run.len()).max(1);
            run.windows(n).for_each(|gram| emit(hash_gram(gram)));
        }
    }
}

fn hash_gram(gram: &[u64]) -> u64 {
    if let [single] = gram {
        return *single;
    }
    let mut bytes = [0u8; 64];
    let len = gram.len().min(8) * 8;
    for (chunk, hash) in bytes.chunks_exact_mut(8).zip(gram) {
        chunk.copy_from_slice(&hash.to_le_bytes());
    }
    xxh3_64_with_seed(&bytes[..len], FEATURE_SEED)
}

/// Number of differing bits between two fingerprints.
#[inline]
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::normalize::normalize;

    fn simhash(text: &str) -> u64 {
        fingerprint(&normalize(text)).simhash
    }

    /// Fingerprints are persisted: these values must never change within a version.
    #[test]
    fn golden_fingerprints() {
        let golden: [(&str, u64); 4] = [
            ("Open-source maintainer secretly rejected the safety patches", 0x01a3a150bc3842d0),
            ("继FBI承认罗斯威尔事件是飞碟坠毁后，外星人视频又被曝光", 0x53b2a0a705f81087),
            ("", 0),
            ("One", 0x3e33c487080aae4f),
        ];
        for (text, expected) in golden {
            assert_eq!(simhash(text), expected, "fingerprint of {text:?} changed: bump FINGERPRINT_VERSION");
        }
    }

    #[test]
    fn repeated_words_count_once() {
        assert_eq!(simhash("the bridge the bridge the bridge closes"), simhash("the bridge closes"));
        let a = "the city said the mayor of the town and the council of the region met at the hall of the port";
        let b = "the ferry to the island of the north and the boat of the south left at the end of the day";
        assert!(
            crate::prepare::fingerprint::hamming(simhash(a), simhash(b)) > 8,
            "common words must not outvote the rest"
        );
    }

    #[test]
    fn normalization_noise_does_not_change_the_fingerprint() {
        let a = simhash("The harbour bridge closes tonight at nine, says the city");
        let b = simhash("THE HARBOUR BRIDGE closes tonight at nine says the city!! https://t.co/x @someone");
        assert_eq!(a, b);
    }

    #[test]
    fn light_edits_stay_close_and_unrelated_texts_do_not() {
        let a = simhash("The harbour bridge closes tonight at nine for repairs, says the city council");
        let b = simhash("The harbour bridge closes tonight at nine for urgent repairs, says the city council");
        let c = simhash("Our team finally won the derby after twelve long years of waiting for it");
        assert!(hamming(a, b) < hamming(a, c), "{} vs {}", hamming(a, b), hamming(a, c));
    }

    #[test]
    fn counts_features() {
        let text = normalize("one two three");
        assert_eq!(fingerprint(&text).features, 3); // 3 unigrams
        assert_eq!(fingerprint(&normalize("转发微博")).features, 3); // 3 character bigrams
    }
}
