//! Throughput of the per-post text work: `normalize` + `fingerprint` (what every post costs before any
//! index is touched), `normalize` alone, and `minhash::signature` over an already normalized text.
//!
//! Inputs: 512 English and 512 Chinese tweet-length posts generated deterministically from word lists
//! (`echotrace_benches::synthetic`: openers, hashtags, @mentions, URLs, emoji included), so every run
//! measures the same texts. Each iteration processes the whole set of one language; criterion reports
//! posts per second (`Throughput::Elements`).
//!
//! ```text
//! cargo bench -p echotrace-benches --bench fingerprint
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use echotrace_benches::SplitMix;
use echotrace_benches::synthetic::{Language, corpus};
use echotrace_core::link::minhash;
use echotrace_core::prepare::fingerprint::fingerprint;
use echotrace_core::prepare::normalize::{NormalizedText, normalize};
use std::hint::black_box;
use std::time::Duration;

/// Posts per language in one iteration.
const POSTS: usize = 512;

fn text_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint");
    // An iteration takes up to 1.5 ms: 8 s gives every benchmark its 100 samples.
    group.measurement_time(Duration::from_secs(8));
    for (name, language) in [("english", Language::English), ("chinese", Language::Chinese)] {
        let texts = corpus(language, POSTS, &mut SplitMix(2026));
        let mean_chars = texts.iter().map(|t| t.chars().count()).sum::<usize>() as f64 / texts.len() as f64;
        println!("{POSTS} {name} posts, {mean_chars:.0} characters on average, e.g. {:?}", texts[0]);
        let normalized: Vec<NormalizedText> = texts.iter().map(|t| normalize(t)).collect();
        group.throughput(Throughput::Elements(texts.len() as u64));
        group.bench_function(BenchmarkId::new("normalize+fingerprint", name), |b| {
            b.iter(|| texts.iter().map(|t| fingerprint(&normalize(black_box(t))).simhash).fold(0, |a, h| a ^ h));
        });
        group.bench_function(BenchmarkId::new("normalize", name), |b| {
            b.iter(|| texts.iter().map(|t| normalize(black_box(t)).len()).sum::<usize>());
        });
        group.bench_function(BenchmarkId::new("minhash_signature", name), |b| {
            b.iter(|| {
                normalized.iter().filter_map(|n| minhash::signature(black_box(n))).map(|s| s[0]).fold(0, |a, h| a ^ h)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, text_throughput);
criterion_main!(benches);
