//! The semantic window's search: `SemanticIndex`'s exact scan against an HNSW index (`hnsw_rs`) at
//! windows of 10⁴ to 10⁶ vectors, per post as the detector spends it: one insert and one top-5
//! search.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin semantic-window -- [--sizes 10000,100000,1000000] [--queries 2000] [--shards 4]
//! ```
//!
//! Vectors are 384-dimensional unit vectors (MiniLM's), drawn around 2,000 topic centres so that
//! near neighbours exist as they do among real posts: half the queries are a stored vector moved
//! slightly (a paraphrase), half a fresh draw (a post on a known topic with no parent). For each
//! size it prints the scan's and HNSW's search time (p50, p99), HNSW's insert time, the cost per
//! post (insert + search), HNSW's recall of the scan's top 5, and the resident memory each index
//! grew by per vector. The baseline is the exact scan in the same run. Single thread, as the
//! detector runs. A last row asks the same queries of the window split into `--shards` shards by
//! post (`detector.semantic.shards`: every shard asked, the answers merged), and checks that it
//! finds what the whole window finds.

use anyhow::Context;
use echotrace_benches::{SplitMix, percentile, resident_bytes};
use echotrace_core::link::semantic::{SemanticIndex, TextEmbedding};
use echotrace_core::link::semantic_shards::{ScanLimits, SemanticWindow};
use hnsw_rs::anndists::dist::DistDot;
use hnsw_rs::hnsw::Hnsw;
use std::num::NonZeroU32;
use std::time::Instant;

const DIMENSION: usize = 384;
const TOPICS: usize = 2_000;
const TOP_K: usize = 5;
/// HNSW's parameters: the usual defaults for 10⁵–10⁶ vectors of this dimension.
const HNSW_CONNECTIONS: usize = 16;
const HNSW_EF_CONSTRUCTION: usize = 100;
const HNSW_EF_SEARCH: usize = 64;

/// A standard normal draw (Box–Muller).
fn normal(random: &mut SplitMix) -> f32 {
    let u = (random.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let v = (random.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u.max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// `around` moved by noise of `spread` per dimension (relative to a unit vector's), normalized.
fn near(random: &mut SplitMix, around: &[f32], spread: f32) -> Vec<f32> {
    let scale = spread / (DIMENSION as f32).sqrt();
    normalized(around.iter().map(|x| x + scale * normal(random)).collect())
}

fn embedding(vector: &[f32]) -> TextEmbedding {
    TextEmbedding { vectors: vector.to_vec(), dimension: DIMENSION, tokens: 30 }
}

fn measure(size: usize, queries: usize, shards: NonZeroU32) -> anyhow::Result<()> {
    let mut random = SplitMix(size as u64);
    let topics: Vec<Vec<f32>> =
        (0..TOPICS).map(|_| normalized((0..DIMENSION).map(|_| normal(&mut random)).collect())).collect();
    let vectors: Vec<Vec<f32>> = (0..size).map(|i| near(&mut random, &topics[i % TOPICS], 1.2)).collect();
    let probes: Vec<Vec<f32>> = (0..queries)
        .map(|q| {
            let pick = random.next_u64() as usize;
            if q % 2 == 0 {
                near(&mut random, &vectors[pick % size], 0.4)
            } else {
                near(&mut random, &topics[pick % TOPICS], 1.2)
            }
        })
        .collect();

    let before = resident_bytes()?;
    let mut index = SemanticIndex::new();
    for (i, vector) in vectors.iter().enumerate() {
        index.insert(i as u64, i as i64, &embedding(vector), Vec::new());
    }
    let scan_bytes = resident_bytes()?.saturating_sub(before) as f64 / size as f64;
    let mut scan_times = Vec::with_capacity(queries);
    let mut exact: Vec<Vec<u64>> = Vec::with_capacity(queries);
    for probe in &probes {
        let query = embedding(probe);
        let started = Instant::now();
        let found = index.nearest(&query, &[], TOP_K, 0, -1.0, None);
        scan_times.push(started.elapsed().as_secs_f64() * 1e6);
        exact.push(found.iter().map(|n| n.key).collect());
    }
    drop(index);

    let mut split = SemanticWindow::new(shards);
    for (i, vector) in vectors.iter().enumerate() {
        split.insert(i as u64, i as i64, &embedding(vector), Vec::new());
    }
    let mut split_times = Vec::with_capacity(queries);
    let mut split_differs = 0usize;
    for (probe, exact) in probes.iter().zip(&exact) {
        let query = embedding(probe);
        let started = Instant::now();
        let found = split.nearest(&query, &[], ScanLimits { top_k: TOP_K, lexical_top_k: 0, min_cosine: -1.0 }, None);
        split_times.push(started.elapsed().as_secs_f64() * 1e6);
        split_differs += usize::from(found.iter().map(|n| n.key).ne(exact.iter().copied()));
    }
    drop(split);

    let before = resident_bytes()?;
    let hnsw: Hnsw<f32, DistDot> = Hnsw::new(HNSW_CONNECTIONS, size, 16, HNSW_EF_CONSTRUCTION, DistDot);
    let started = Instant::now();
    for (i, vector) in vectors.iter().enumerate() {
        hnsw.insert((vector.as_slice(), i));
    }
    let insert_us = started.elapsed().as_secs_f64() * 1e6 / size as f64;
    let hnsw_bytes = resident_bytes()?.saturating_sub(before) as f64 / size as f64;
    let mut hnsw_times = Vec::with_capacity(queries);
    let mut hits = 0usize;
    for (probe, exact) in probes.iter().zip(&exact) {
        let started = Instant::now();
        let found = hnsw.search(probe, TOP_K, HNSW_EF_SEARCH);
        hnsw_times.push(started.elapsed().as_secs_f64() * 1e6);
        hits += found.iter().filter(|n| exact.contains(&(n.d_id as u64))).count();
    }
    let recall = hits as f64 / exact.iter().map(Vec::len).sum::<usize>() as f64;

    scan_times.sort_by(f64::total_cmp);
    hnsw_times.sort_by(f64::total_cmp);
    split_times.sort_by(f64::total_cmp);
    let (scan_p50, hnsw_p50) = (percentile(&scan_times, 0.5), percentile(&hnsw_times, 0.5));
    println!("\n{size} vectors, {queries} queries");
    println!(
        "  {:<26} {:>12} {:>12} {:>14} {:>16} {:>10}",
        "", "search p50", "search p99", "insert (mean)", "per post", "bytes/vec"
    );
    println!(
        "  {:<26} {:>10.1}µs {:>10.1}µs {:>12.1}µs {:>14.1}µs {:>10.0}",
        "exact scan (baseline)",
        scan_p50,
        percentile(&scan_times, 0.99),
        0.0,
        scan_p50,
        scan_bytes
    );
    println!(
        "  {:<26} {:>10.1}µs {:>10.1}µs {:>12.1}µs {:>14.1}µs {:>10.0}",
        format!("hnsw M={HNSW_CONNECTIONS} ef={HNSW_EF_SEARCH}"),
        hnsw_p50,
        percentile(&hnsw_times, 0.99),
        insert_us,
        hnsw_p50 + insert_us,
        hnsw_bytes
    );
    println!(
        "  {:<26} {:>10.1}µs {:>10.1}µs {:>12.1}µs {:>14.1}µs {:>10}",
        format!("scan split in {shards} shards"),
        percentile(&split_times, 0.5),
        percentile(&split_times, 0.99),
        0.0,
        percentile(&split_times, 0.5),
        "-"
    );
    println!(
        "  split ÷ whole scan, p50: {:.2}; queries answered otherwise than by the whole scan: {split_differs}",
        percentile(&split_times, 0.5) / scan_p50
    );
    println!(
        "  per post, scan ÷ hnsw: {:.2}; hnsw recall of the scan's top {TOP_K}: {:.3}",
        scan_p50 / (hnsw_p50 + insert_us),
        recall
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut sizes = vec![10_000, 100_000, 1_000_000];
    let mut queries = 2_000;
    let mut shards = NonZeroU32::new(4).expect("nonzero");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sizes" => {
                let list = args.next().context("--sizes N,N,…")?;
                sizes = list.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--queries" => queries = args.next().context("--queries N")?.parse()?,
            "--shards" => shards = args.next().context("--shards N")?.parse()?,
            _ => anyhow::bail!("usage: semantic-window [--sizes 10000,100000,1000000] [--queries N] [--shards N]"),
        }
    }
    for size in sizes {
        measure(size, queries, shards)?;
    }
    Ok(())
}
