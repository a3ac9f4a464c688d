//! Measures how well simhash settings link light edits of one-sentence posts, and how often they link
//! unrelated posts, on streams given on the command line (e.g. the dev streams in `../shared/data`).
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin neardup-recall -- ../shared/data/threads_rumoureval.jsonl
//! ```
//!
//! For every post with 6 to 40 tokens it makes light edits (one token deleted, inserted or replaced; a
//! "BREAKING:" prefix and a hashtag; two edits at once) and reports, per shingling and distance `k`,
//! the share of edits within `k` of the original (recall) and the share of random pairs of different
//! posts within `k` (false links). The chosen setting is written up in `docs/near-duplicates.md`.

use echotrace_benches::{SplitMix, load_texts};
use echotrace_core::link::minhash::{self, BANDS, ROWS, estimated_jaccard};
use echotrace_core::prepare::fingerprint::{Shingling, fingerprint_with, hamming};
use echotrace_core::prepare::normalize::{Script, normalize};

const EDIT_KINDS: [&str; 5] = ["delete", "insert", "replace", "prefix+tag", "two edits"];

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: neardup-recall STREAM.jsonl...");
    let texts: Vec<String> =
        load_texts(&paths)?.into_iter().filter(|t| (6..=40).contains(&normalize(t).len())).collect();
    println!("{} one-sentence posts from {}", texts.len(), paths.join(", "));
    let mut rng = SplitMix(42);
    let pairs: Vec<(String, String, usize)> = texts
        .iter()
        .flat_map(|t| (0..EDIT_KINDS.len()).map(|kind| (t.clone(), edit(t, kind, &mut rng), kind)).collect::<Vec<_>>())
        .collect();
    let shinglings = [
        ("words 1", Shingling { max_word_ngram: 1, cjk_ngram: 1 }),
        ("words 1-2, cjk 2", Shingling { max_word_ngram: 2, cjk_ngram: 2 }),
        ("words 1-3, cjk 3", Shingling { max_word_ngram: 3, cjk_ngram: 3 }),
    ];
    println!("{:<18} {:>2} {:>8} {}", "shingling", "k", "false", EDIT_KINDS.map(|k| format!("{k:>11}")).join(""));
    for (name, shingling) in shinglings {
        let print = |t: &str| fingerprint_with(&normalize(t), shingling).simhash;
        let distances: Vec<(u32, usize)> =
            pairs.iter().map(|(a, b, kind)| (hamming(print(a), print(b)), *kind)).collect();
        let random: Vec<u32> = (0..200_000)
            .filter_map(|_| {
                let (a, b) = (rng.below(texts.len()), rng.below(texts.len()));
                (normalize(&texts[a]).joined() != normalize(&texts[b]).joined())
                    .then(|| hamming(print(&texts[a]), print(&texts[b])))
            })
            .collect();
        for k in [3, 4, 5, 6, 8, 10] {
            let false_rate = random.iter().filter(|&&d| d <= k).count() as f64 / random.len() as f64;
            let recalls: Vec<String> = (0..EDIT_KINDS.len())
                .map(|kind| {
                    let of_kind: Vec<u32> = distances.iter().filter(|(_, k2)| *k2 == kind).map(|(d, _)| *d).collect();
                    format!("{:>11.3}", of_kind.iter().filter(|&&d| d <= k).count() as f64 / of_kind.len() as f64)
                })
                .collect();
            println!("{name:<18} {k:>2} {false_rate:>8.5} {}", recalls.join(""));
        }
    }
    measure_minhash(&texts, &pairs, &mut rng);
    Ok(())
}

/// Recall and false links of the MinHash LSH: a pair links when it shares a band and its estimated
/// Jaccard similarity reaches the threshold.
fn measure_minhash(texts: &[String], pairs: &[(String, String, usize)], rng: &mut SplitMix) {
    let sig = |t: &str| minhash::signature(&normalize(t));
    let simhash = |t: &str| echotrace_core::prepare::fingerprint::fingerprint(&normalize(t)).simhash;
    let links = |a: &str, b: &str, threshold: f32, max_hamming: u32| match (sig(a), sig(b)) {
        (Some(x), Some(y)) => {
            (0..BANDS).any(|band| x[band * ROWS..(band + 1) * ROWS] == y[band * ROWS..(band + 1) * ROWS])
                && estimated_jaccard(&x, &y) >= threshold
                && hamming(simhash(a), simhash(b)) <= max_hamming
        }
        _ => false,
    };
    let random: Vec<(usize, usize)> = (0..200_000)
        .map(|_| (rng.below(texts.len()), rng.below(texts.len())))
        .filter(|&(a, b)| normalize(&texts[a]).joined() != normalize(&texts[b]).joined())
        .collect();
    for (threshold, max_hamming) in [(0.5f32, 64), (0.6, 64), (0.7, 64), (0.5, 12), (0.6, 12), (0.6, 10)] {
        let links = |a: &str, b: &str| links(a, b, threshold, max_hamming);
        let false_rate =
            random.iter().filter(|&&(a, b)| links(&texts[a], &texts[b])).count() as f64 / random.len() as f64;
        let recalls: Vec<String> = (0..EDIT_KINDS.len())
            .map(|kind| {
                let of_kind: Vec<&(String, String, usize)> = pairs.iter().filter(|p| p.2 == kind).collect();
                let linked = of_kind.iter().filter(|(a, b, _)| links(a, b)).count();
                format!("{:>11.3}", linked as f64 / of_kind.len() as f64)
            })
            .collect();
        let name = format!("minhash J>={threshold} d<={max_hamming}");
        println!("{name:<21} {false_rate:>8.5} {}", recalls.join(""));
    }
}

/// A light edit of `text`, token-level, in the script of the text.
fn edit(text: &str, kind: usize, rng: &mut SplitMix) -> String {
    let normalized = normalize(text);
    let cjk = normalized.tokens().filter(|(_, s)| *s == Script::Cjk).count() * 2 > normalized.len();
    let mut tokens: Vec<String> = normalized.tokens().map(|(t, _)| t.to_owned()).collect();
    let filler = if cjk { ["了", "的", "也", "都"] } else { ["really", "just", "now", "totally"] };
    let mut one = |tokens: &mut Vec<String>, op: usize| {
        let at = rng.below(tokens.len());
        match op {
            0 => drop(tokens.remove(at)),
            1 => tokens.insert(at, filler[rng.below(4)].to_owned()),
            _ => tokens[at] = filler[rng.below(4)].to_owned(),
        }
    };
    match kind {
        0..=2 => one(&mut tokens, kind),
        3 => {
            tokens.insert(0, if cjk { "突发" } else { "breaking" }.to_owned());
            tokens.push(if cjk { "新闻" } else { "news" }.to_owned());
        }
        _ => {
            one(&mut tokens, 0);
            one(&mut tokens, 2);
        }
    }
    tokens.join(if cjk { "" } else { " " })
}
