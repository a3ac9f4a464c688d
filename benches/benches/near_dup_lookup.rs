//! Latency of one `NearDupIndex` lookup (k = 3) with 1,000,000 fingerprints in the window, against the
//! exhaustive baseline measured in the same run: `(a ^ b).count_ones() <= 3` over a `Vec<u64>` of the
//! same fingerprints. Both are in one criterion group, so the ratio reads off adjacent lines.
//!
//! Fingerprints are random (splitmix64, fixed seed); queries cycle through 65,536 of them, half stored
//! fingerprints with 0 to 3 bits flipped (hits), half random (misses), so the buckets they read are not
//! all in cache (1,024 queries would keep them there and report about 300 ns). Both sides return the
//! matching positions. The run takes under a minute.
//!
//! ```text
//! cargo bench -p echotrace-benches --bench near_dup_lookup
//! ```
//!
//! For the 10M-fingerprint window of the target, with percentiles and memory, see `window-lookup`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use echotrace_benches::{SplitMix, exhaustive_scan, near_dup_queries};
use echotrace_core::link::near_dup::NearDupIndex;
use std::hint::black_box;
use std::time::Duration;

/// Fingerprints in the window.
const WINDOW: usize = 1_000_000;
/// Distinct queries, cycled through.
const QUERIES: usize = 1 << 16;
/// Largest Hamming distance, the detector's default.
const K: u32 = 3;

fn lookup_latency(c: &mut Criterion) {
    let mut rng = SplitMix(7);
    let stored: Vec<u64> = (0..WINDOW).map(|_| rng.next_u64()).collect();
    let mut index = NearDupIndex::new(K);
    for (i, &fp) in stored.iter().enumerate() {
        index.insert(fp, i as u64, i as i64);
    }
    let queries = near_dup_queries(&stored, QUERIES, &mut rng);

    let mut group = c.benchmark_group("near_dup_lookup_1M");
    group.throughput(Throughput::Elements(1));
    // The scan takes about a millisecond: 7 s gives it its 100 samples.
    group.measurement_time(Duration::from_secs(7));
    let mut next = 0;
    group.bench_function("index_k3", |b| {
        b.iter(|| {
            next = (next + 1) % queries.len();
            index.near(black_box(queries[next]))
        });
    });
    group.bench_function("exhaustive_scan_k3", |b| {
        b.iter(|| {
            next = (next + 1) % queries.len();
            exhaustive_scan(&stored, black_box(queries[next]), K)
        });
    });
    group.finish();
}

criterion_group!(benches, lookup_latency);
criterion_main!(benches);
