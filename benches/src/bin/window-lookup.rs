//! End-to-end figure for the target "a Hamming-3 lookup in a 10M-fingerprint window with p99 under 20 µs
//! and under 100 bytes per live post".
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin window-lookup
//! cargo run --release -p echotrace-benches --bin window-lookup -- --posts 1000000
//! cargo run --release -p echotrace-benches --bin window-lookup -- --minhash
//! cargo run --release -p echotrace-benches --bin window-lookup -- --sweep [--posts 10000000]
//! cargo run --release -p echotrace-benches --bin window-lookup -- --shards 4 [--posts 1000000]
//! ```
//!
//! Default mode: fills a `NearDupIndex` (k = 3) with N random fingerprints (splitmix64; `--posts N`,
//! default 10,000,000), then times 100,000 lookups one by one (even ones a stored fingerprint with 0 to 3
//! random bits flipped, odd ones a random fingerprint) and prints p50/p99/p999 and lookups per second.
//! The baseline, in the same run over the same data: 200 exhaustive scans (`(a ^ b).count_ones() <= 3`
//! over a `Vec<u64>`), their p50 and the speed-up; the scans also check that the index finds exactly
//! what they find. Memory per live post is the growth of resident memory (`/proc/self/statm`, 4 KiB
//! pages) while the index is filled, divided by N; the fingerprints and queries are generated before.
//!
//! `--minhash`: the same for the `MinHashIndex` (N defaults to 1,000,000: signatures come from synthetic
//! English and Chinese posts, which takes a while to generate). Queries are light edits of stored posts
//! and fresh posts; a lookup is `MinHashIndex::similar` at the detector's default `min_jaccard`, on a
//! precomputed signature; the baseline compares the query's signature with every stored one.
//!
//! `--sweep`: the linking stage's whole per-post work as its window grows from 1M to 10M synthetic
//! posts (`--posts` caps the largest): both indexes filled with the signatures of the synthetic
//! posts, then at each size 100,000 posts linked at steady state, each one looked up in both
//! indexes, inserted, and the oldest post evicted so the window keeps its size (half the posts are
//! light edits of posts in the window, half are fresh; signed before the timer starts). It prints
//! posts per second, µs per post against the smallest window's in the same run (the per-post cost
//! should stay flat), and resident bytes per live post of both indexes together.
//!
//! `--shards N`: the linking indexes split into N shards by lookup key (`link::shard`). The same
//! window of synthetic posts (`--posts`, default 1,000,000) fills one whole pair of indexes and N
//! shard pairs; then 100,000 posts are looked up in each, as probes would be routed to the owners
//! of their keys, and the union of the shards' answers is checked against the whole index's. It
//! prints each shard's heap (counted by the allocator while the indexes are cloned, so exact
//! capacities) per live post of the window against the whole index's, and the time of a shard's
//! lookup and insert against the whole's, in the same run.

use anyhow::Context;
use echotrace_benches::heap::{CountingAllocator, allocated_by};
use echotrace_benches::synthetic::{Language, light_edit, post_text};
use echotrace_benches::{SplitMix, exhaustive_scan, near_dup_queries, resident_bytes};
use echotrace_core::detector::DetectorConfig;
use echotrace_core::link::minhash::{self, MinHashIndex, Signature, estimated_jaccard};
use echotrace_core::link::near_dup::NearDupIndex;
use echotrace_core::link::shard::LinkShard;
use echotrace_core::prepare::fingerprint::fingerprint;
use echotrace_core::prepare::normalize::normalize;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Lookups timed one by one.
const LOOKUPS: usize = 100_000;
/// Exhaustive scans timed (each reads the whole window).
const SCANS: usize = 200;
/// Hamming distance of the target and the detector's default.
const K: u32 = 3;
/// The target's p99 latency, in microseconds.
const P99_TARGET_US: f64 = 20.0;
/// The target's memory per live post, in bytes.
const BYTES_TARGET: f64 = 100.0;
/// What `NearDupIndex` is designed to take at k = 3: 12 bytes in each of 4 tables plus 24 in the ring.
const NEAR_DUP_DESIGN_BYTES: u32 = 72;

/// Window sizes of `--sweep`.
const SWEEP_SIZES: [usize; 4] = [1_000_000, 2_000_000, 5_000_000, 10_000_000];
/// Posts linked at each size of `--sweep`.
const SWEEP_POSTS: usize = 100_000;

const USAGE: &str = "usage: window-lookup [--posts N] [--minhash | --sweep | --shards N]";

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> anyhow::Result<()> {
    let mut posts = None;
    let (mut use_minhash, mut sweep, mut shards) = (false, false, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--posts" => {
                let n = args.next().context(USAGE)?;
                posts = Some(n.replace('_', "").parse::<usize>().with_context(|| format!("--posts {n}: {USAGE}"))?);
            }
            "--minhash" => use_minhash = true,
            "--sweep" => sweep = true,
            "--shards" => {
                let n = args.next().context(USAGE)?;
                shards = Some(n.parse::<u32>().with_context(|| format!("--shards {n}: {USAGE}"))?);
            }
            _ => anyhow::bail!(USAGE),
        }
    }
    if let Some(shards) = shards {
        return shard_split(posts.unwrap_or(1_000_000), shards);
    }
    if sweep {
        return window_sweep(posts.unwrap_or(SWEEP_SIZES[SWEEP_SIZES.len() - 1]));
    }
    if use_minhash { minhash_window(posts.unwrap_or(1_000_000)) } else { hamming_window(posts.unwrap_or(10_000_000)) }
}

/// The Hamming index over `n` random fingerprints.
fn hamming_window(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0, "--posts must be positive");
    let mut rng = SplitMix(7);
    let stored: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
    let queries = near_dup_queries(&stored, LOOKUPS, &mut rng);

    let before = resident_bytes()?;
    let started = Instant::now();
    let mut index = NearDupIndex::new(K);
    for (i, &fp) in stored.iter().enumerate() {
        index.insert(fp, i as u64, i as i64);
    }
    let fill = started.elapsed();
    let bytes_per_post = resident_bytes()?.saturating_sub(before) as f64 / n as f64;

    let lookups = time_each(&queries, |&q| {
        let mut found = 0;
        index.for_each_near(q, |_| found += 1);
        found
    });
    let scans = time_each(&queries[..SCANS], |&q| black_box(exhaustive_scan(&stored, q, K)).len());
    let disagreements = queries[..SCANS]
        .iter()
        .filter(|&&q| {
            let mut found: Vec<u64> = index.near(q).iter().map(|m| m.payload).collect();
            found.sort_unstable();
            found != exhaustive_scan(&stored, q, K)
        })
        .count();

    println!(
        "NearDupIndex, k = {K}, window of {} random fingerprints, filled in {:.2} s",
        group(n),
        fill.as_secs_f64()
    );
    print_table("index lookup", &lookups, "exhaustive scan", &scans, n, ["near stored ones", "random ones"]);
    println!(
        "index and scan agree on {} of the {SCANS} scanned queries ({} matches in all)",
        SCANS - disagreements,
        scans.total_found()
    );
    print_verdict(&lookups, bytes_per_post, Some(NEAR_DUP_DESIGN_BYTES));
    anyhow::ensure!(disagreements == 0, "the index missed or invented matches");
    Ok(())
}

/// The MinHash LSH over the signatures of `n` synthetic posts.
fn minhash_window(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0, "--posts must be positive");
    let min_jaccard = DetectorConfig::default().min_jaccard;
    let started = Instant::now();
    let stored: Vec<(Signature, u64)> = (0..n).map(|i| sign(&stored_text(i))).collect();
    let mut rng = SplitMix(11);
    let queries: Vec<Signature> = (0..LOOKUPS)
        .map(|i| {
            let text =
                if i.is_multiple_of(2) { light_edit(&stored_text(rng.below(n)), &mut rng) } else { fresh_text(i) };
            sign(&text).0
        })
        .collect();
    println!(
        "{} synthetic posts and {} queries signed in {:.1} s",
        group(n),
        group(LOOKUPS),
        started.elapsed().as_secs_f64()
    );

    let before = resident_bytes()?;
    let started = Instant::now();
    let mut index = MinHashIndex::new();
    for (i, &(signature, simhash)) in stored.iter().enumerate() {
        index.insert(signature, simhash, i as u64, i as i64);
    }
    let fill = started.elapsed();
    let bytes_per_post = resident_bytes()?.saturating_sub(before) as f64 / n as f64;

    let lookups = time_each(&queries, |q| index.similar(q, min_jaccard).len());
    let scan = |q: &Signature| stored.iter().filter(|(s, _)| estimated_jaccard(q, s) >= min_jaccard).count();
    let scans = time_each(&queries[..SCANS], |q| black_box(scan(q)));
    let lsh_found: usize = queries[..SCANS].iter().map(|q| index.similar(q, min_jaccard).len()).sum();

    println!(
        "MinHashIndex ({} bands x {} rows), min_jaccard {min_jaccard}, window of {} synthetic posts, filled in {:.2} s",
        minhash::BANDS,
        minhash::ROWS,
        group(n),
        fill.as_secs_f64()
    );
    print_table("LSH lookup", &lookups, "exhaustive scan", &scans, n, ["edited stored posts", "fresh posts"]);
    println!(
        "on the {SCANS} scanned queries the LSH finds {lsh_found} of the {} signatures at Jaccard >= {min_jaccard}",
        scans.total_found()
    );
    print_verdict(&lookups, bytes_per_post, None);
    Ok(())
}

/// Both indexes of the linking stage at windows from 1M posts to `largest`.
fn window_sweep(largest: usize) -> anyhow::Result<()> {
    let config = DetectorConfig::default();
    let sizes: Vec<usize> = SWEEP_SIZES.iter().copied().filter(|&size| size <= largest).collect();
    anyhow::ensure!(!sizes.is_empty(), "--posts must be at least {}", group(SWEEP_SIZES[0]));
    let before = resident_bytes()?;
    let mut near_dups = NearDupIndex::new(config.max_hamming);
    let mut similar_sets = MinHashIndex::new();
    let mut next = 0usize;
    let mut first_rate = None;
    println!(
        "linking stage (NearDupIndex k = {} and MinHashIndex), {} posts linked at each window size",
        config.max_hamming,
        group(SWEEP_POSTS)
    );
    println!("{:>12} {:>12} {:>10} {:>14} {:>18}", "window", "posts/s", "µs/post", "vs 1M window", "bytes/live post");
    for size in sizes {
        let started = Instant::now();
        while near_dups.len() < size {
            let (signature, simhash) = sign(&stored_text(next));
            near_dups.insert(simhash, next as u64, next as i64);
            similar_sets.insert(signature, simhash, next as u64, next as i64);
            next += 1;
        }
        let fill = started.elapsed();
        let bytes_per_post = resident_bytes()?.saturating_sub(before) as f64 / size as f64;
        let mut rng = SplitMix(size as u64);
        let arriving: Vec<(Signature, u64)> = (0..SWEEP_POSTS)
            .map(|i| match i % 2 {
                0 => sign(&light_edit(&stored_text(next - 1 - rng.below(size)), &mut rng)),
                _ => sign(&stored_text(next + i)),
            })
            .collect();
        let (mut found, started) = (0usize, Instant::now());
        for (signature, simhash) in arriving {
            near_dups.for_each_near(simhash, |_| found += 1);
            found += similar_sets.similar(&signature, config.min_jaccard).len();
            near_dups.insert(simhash, next as u64, next as i64);
            similar_sets.insert(signature, simhash, next as u64, next as i64);
            next += 1;
            let oldest_kept = (next - size) as i64;
            near_dups.evict_before(oldest_kept);
            similar_sets.evict_before(oldest_kept);
        }
        let per_post_us = started.elapsed().as_secs_f64() * 1e6 / SWEEP_POSTS as f64;
        let first = *first_rate.get_or_insert(per_post_us);
        println!(
            "{:>12} {:>12} {:>10.2} {:>13.2}x {:>18.1}   (filled in {:.0} s, {} matches)",
            group(size),
            group((1e6 / per_post_us).round() as usize),
            per_post_us,
            per_post_us / first,
            bytes_per_post,
            fill.as_secs_f64(),
            group(black_box(found))
        );
        anyhow::ensure!(near_dups.len() == size && similar_sets.len() == size, "the window did not keep its size");
    }
    Ok(())
}

/// The near-duplicate and MinHash indexes of one linking shard (or of the whole window).
#[derive(Clone)]
struct LinkingIndexes {
    near_dups: NearDupIndex,
    similar_sets: MinHashIndex,
}

impl LinkingIndexes {
    fn new(shard: LinkShard) -> LinkingIndexes {
        let max_hamming = DetectorConfig::default().max_hamming;
        LinkingIndexes {
            near_dups: NearDupIndex::new_shard(max_hamming, shard),
            similar_sets: MinHashIndex::new_shard(shard),
        }
    }

    fn insert(&mut self, (signature, simhash): (Signature, u64), payload: usize) {
        self.near_dups.insert(simhash, payload as u64, payload as i64);
        self.similar_sets.insert(signature, simhash, payload as u64, payload as i64);
    }

    /// The posts both lookups find, as (index, payload).
    fn lookup(&self, (signature, simhash): &(Signature, u64), min_jaccard: f32) -> BTreeSet<(u8, u64)> {
        let mut found = BTreeSet::new();
        self.near_dups.for_each_near(*simhash, |m| {
            found.insert((0, m.payload));
        });
        found.extend(self.similar_sets.similar(signature, min_jaccard).into_iter().map(|m| (1, m.payload)));
        found
    }
}

/// The linking indexes of `n` posts, whole and split into `count` shards.
fn shard_split(n: usize, count: u32) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0 && count > 1, "--posts must be positive and --shards at least 2");
    let min_jaccard = DetectorConfig::default().min_jaccard;
    let mut whole = LinkingIndexes::new(LinkShard::WHOLE);
    let mut shards: Vec<LinkingIndexes> = LinkShard::all(count).map(LinkingIndexes::new).collect();
    let started = Instant::now();
    for i in 0..n {
        let signed = sign(&stored_text(i));
        whole.insert(signed, i);
        shards.iter_mut().for_each(|shard| shard.insert(signed, i));
    }
    let mut rng = SplitMix(13);
    let arriving: Vec<(Signature, u64)> = (0..LOOKUPS)
        .map(|i| match i % 2 {
            0 => sign(&light_edit(&stored_text(rng.below(n)), &mut rng)),
            _ => sign(&fresh_text(i)),
        })
        .collect();
    println!(
        "{} synthetic posts indexed whole and in {count} shards, {} lookups signed, in {:.0} s",
        group(n),
        group(LOOKUPS),
        started.elapsed().as_secs_f64()
    );

    let mut missing = 0;
    for probe in &arriving {
        let union: BTreeSet<(u8, u64)> = shards.iter().flat_map(|shard| shard.lookup(probe, min_jaccard)).collect();
        missing += usize::from(union != whole.lookup(probe, min_jaccard));
    }
    let matches: usize = arriving.iter().map(|probe| whole.lookup(probe, min_jaccard).len()).sum();
    println!(
        "union of the shards' answers = the whole index's answer: {} of {} lookups ({} matches)",
        group(LOOKUPS - missing),
        group(LOOKUPS),
        group(matches)
    );

    let heap_per_post = |indexes: &LinkingIndexes| allocated_by(|| indexes.clone()).1 as f64 / n as f64;
    let whole_bytes = heap_per_post(&whole);
    // Lookup then insert, as the linking stage does for each arriving post, on clones so that
    // every index sees the same window.
    let time_per_post = |indexes: &LinkingIndexes| {
        let mut indexes = indexes.clone();
        let started = Instant::now();
        for (i, probe) in arriving.iter().enumerate() {
            black_box(indexes.lookup(probe, min_jaccard));
            indexes.insert(*probe, n + i);
        }
        started.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64
    };
    let whole_us = time_per_post(&whole);
    println!();
    println!("{:>8} {:>16} {:>10} {:>12} {:>10}", "shard", "heap B/live post", "of whole", "µs per post", "of whole");
    println!("{:>8} {:>16.1} {:>10.2} {:>12.2} {:>10.2}", "whole", whole_bytes, 1.0, whole_us, 1.0);
    let mut total = 0.0;
    for (i, shard) in shards.iter().enumerate() {
        let (bytes, us) = (heap_per_post(shard), time_per_post(shard));
        total += bytes;
        println!("{:>8} {:>16.1} {:>10.2} {:>12.2} {:>10.2}", i, bytes, bytes / whole_bytes, us, us / whole_us);
    }
    println!("{:>8} {:>16.1} {:>10.2}", "all", total, total / whole_bytes);
    anyhow::ensure!(missing == 0, "the shards' answers differ from the whole index's on {missing} lookups");
    Ok(())
}

/// The text of stored post `i`, reproducible from `i` alone: half English, half Chinese.
fn stored_text(i: usize) -> String {
    let language = if i.is_multiple_of(2) { Language::English } else { Language::Chinese };
    post_text(language, &mut SplitMix((i as u64) << 1))
}

/// A post that is not stored (its seed is odd, stored posts' seeds are even).
fn fresh_text(i: usize) -> String {
    let language = if i % 4 == 1 { Language::English } else { Language::Chinese };
    post_text(language, &mut SplitMix((i as u64) << 1 | 1))
}

/// The MinHash signature and simhash of a text, as the detector stores them.
fn sign(text: &str) -> (Signature, u64) {
    let normalized = normalize(text);
    // Every synthetic post has words; an empty signature would be a bug in the generator.
    let signature = minhash::signature(&normalized).expect("synthetic posts have features");
    (signature, fingerprint(&normalized).simhash)
}

/// Latencies of one operation, sorted, and how many matches it returned for each input, in input order.
struct Latencies {
    sorted: Vec<Duration>,
    found: Vec<usize>,
}

impl Latencies {
    /// The `p`-quantile (nearest rank), in microseconds.
    fn percentile_us(&self, p: f64) -> f64 {
        let rank = ((p * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1].as_secs_f64() * 1e6
    }

    /// Matches returned in all.
    fn total_found(&self) -> usize {
        self.found.iter().sum()
    }

    /// Mean matches per input, over the even inputs and over the odd ones.
    fn mean_found_even_odd(&self) -> (f64, f64) {
        let mean = |parity: usize| {
            let of_parity: Vec<usize> = self.found.iter().skip(parity).step_by(2).copied().collect();
            of_parity.iter().sum::<usize>() as f64 / of_parity.len().max(1) as f64
        };
        (mean(0), mean(1))
    }

    /// Operations per second of timed work.
    fn per_second(&self) -> f64 {
        self.sorted.len() as f64 / self.sorted.iter().sum::<Duration>().as_secs_f64()
    }
}

/// Times `operation` on each input separately; it returns its number of matches.
fn time_each<T>(inputs: &[T], mut operation: impl FnMut(&T) -> usize) -> Latencies {
    let mut found = Vec::with_capacity(inputs.len());
    let mut sorted: Vec<Duration> = inputs
        .iter()
        .map(|input| {
            let started = Instant::now();
            found.push(black_box(operation(black_box(input))));
            started.elapsed()
        })
        .collect();
    sorted.sort_unstable();
    Latencies { sorted, found }
}

/// Prints the latency table; `hits` and `misses` name the even and the odd queries.
fn print_table(index_name: &str, index: &Latencies, scan_name: &str, scan: &Latencies, n: usize, queries: [&str; 2]) {
    let [hits, misses] = queries;
    println!();
    println!("{:<18} {:>8} {:>12} {:>12} {:>12} {:>14}", "", "timed", "p50 µs", "p99 µs", "p999 µs", "per second");
    for (name, latencies) in [(index_name, index), (scan_name, scan)] {
        println!(
            "{name:<18} {:>8} {:>12.2} {:>12.2} {:>12.2} {:>14}",
            latencies.sorted.len(),
            latencies.percentile_us(0.50),
            latencies.percentile_us(0.99),
            latencies.percentile_us(0.999),
            group(latencies.per_second().round() as usize)
        );
    }
    println!();
    println!(
        "speed-up over the scan at p50: {:.0}x ({} posts scanned per query)",
        scan.percentile_us(0.50) / index.percentile_us(0.50),
        group(n)
    );
    let (even, odd) = index.mean_found_even_odd();
    println!("mean matches per lookup: {even:.3} for the {hits}, {odd:.3} for the {misses}");
}

fn print_verdict(lookups: &Latencies, bytes_per_post: f64, design_bytes: Option<u32>) {
    let p99 = lookups.percentile_us(0.99);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let design = design_bytes.map(|b| format!(" (design: {b})")).unwrap_or_default();
    println!("resident memory per live post: {bytes_per_post:.1} bytes{design}");
    println!(
        "target p99 < {P99_TARGET_US} µs: {} ({p99:.2} µs); target < {BYTES_TARGET} bytes per live post: {} ({bytes_per_post:.1})",
        verdict(p99 < P99_TARGET_US),
        verdict(bytes_per_post < BYTES_TARGET)
    );
}

/// `n` with thousands separators.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
