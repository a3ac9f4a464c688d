//! The alerting rules' detection table: campaigns planted into real background streams over a grid
//! of pace, platforms, share of automated or fresh accounts and rounds of summaries, and the
//! background alone, as it comes and time-compressed into dense bursts, with and without organic
//! bots.
//!
//! ```text
//! export ORT_DYLIB_PATH=$(scripts/onnxruntime-library)
//! cargo run --release -p echotrace-benches --bin campaign-grid -- --data ../shared/data \
//!     [--rules CANDIDATE.toml] [--cache /tmp/echotrace-embeddings] [--scenarios] [--backgrounds-only]
//! ```
//!
//! Every run goes through `echotrace backtest`'s engine (the shipped detector, sentence embeddings
//! included, and the scorer), with the embeddings cached on disk between runs
//! ([`echotrace_benches::embedding_cache`]). It prints:
//!
//! - per background, the pages (critical) and tickets (warning) per million posts;
//! - per half of the grid (campaigns of the `fit` stories, those of the `validation` stories), how
//!   many scenarios that must page (at least 4 platforms, at least half the accounts automated or
//!   fresh) paged within 15 minutes of their first post, the slowest, and every miss; and how the
//!   others fared;
//! - with `--scenarios`, one line per scenario: time to its first page and first ticket;
//! - with `--export N DIR`, only scenario `N` (its number in the `--scenarios` table), written as
//!   `DIR/stream.jsonl` and `DIR/labels.tsv` for `echotrace replay` and `echotrace backtest`;
//! - with `--trace FILE`, every post's cascade features (cascades on three platforms or more), the
//!   campaign's cascade marked: what rules are fitted on (`benches/fit_rules.py`).
//!
//! Backgrounds: the RumourEval reply threads, the headline tweets, the CNN/DM articles and
//! summaries, and the Weibo repost cascades, each moved to start at the same instant and merged by
//! event time, in two halves: the first half of each stream's posts (fit) and the second
//! (validation); `dense` divides every gap by 20, so a headline's tweets of an hour land within three
//! minutes and a thread's replies within seconds. The streams say nothing of their accounts;
//! `bots` marks a share of the accounts (by a hash of the account id) as declaring automation, and
//! a fifth of that share as days-old accounts: the organic automation (feeds, aggregators, new
//! users) a platform's traffic holds.
//!
//! Each scenario's campaign starts at a random post of the tweets or the articles in one of the
//! backgrounds, and runs with the background's posts (threads, tweets, articles) from an hour
//! before (at most 1,000) to an hour and a half after (at most 2,000).

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use echotrace::backtest::{Backtest, Labels};
use echotrace::config::Config;
use echotrace::embed::cached::BatchEmbed;
use echotrace_benches::SplitMix;
use echotrace_benches::campaigns::{self, Half, Scenario, Story};
use echotrace_benches::embedding_cache::DiskEmbeddingCache;
use echotrace_core::post::Post;
use echotrace_core::prepare::PreparedPost;
use echotrace_core::score::features::CascadeFeatures;
use echotrace_core::score::rules::RuleSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Paces (posts a minute), platforms, shares and rounds of the grid.
const PACES: [f64; 5] = [0.3, 0.5, 1.0, 2.0, 5.0];
const PLATFORM_COUNTS: [usize; 5] = [2, 3, 4, 5, 6];
const SHARES: [f64; 5] = [0.2, 0.35, 0.5, 0.7, 0.9];
const ROUNDS: [usize; 4] = [0, 1, 2, 3];
/// A scenario that must page does so within this much stream time of its first post.
const PAGE_WITHIN_SECS: f64 = 15.0 * 60.0;
/// How much `dense` compresses time.
const DENSE: i32 = 20;

/// One background: the streams, time-compressed or not, with organic automation or not.
#[derive(Debug, Clone, Copy)]
struct Background {
    name: &'static str,
    compression: i32,
    bots: f64,
}

const BACKGROUNDS: [Background; 6] = [
    Background { name: "as-is", compression: 1, bots: 0.0 },
    Background { name: "as-is, 5% bots", compression: 1, bots: 0.05 },
    Background { name: "as-is, 15% bots", compression: 1, bots: 0.15 },
    Background { name: "dense", compression: DENSE, bots: 0.0 },
    Background { name: "dense, 5% bots", compression: DENSE, bots: 0.05 },
    Background { name: "dense, 15% bots", compression: DENSE, bots: 0.15 },
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut data, mut rules_file, mut cache_dir) = (None, None, PathBuf::from("/tmp/echotrace-embeddings"));
    let (mut per_scenario, mut backgrounds_only, mut trace_path, mut export) = (false, false, None, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--rules" => rules_file = Some(PathBuf::from(value("--rules")?)),
            "--cache" => cache_dir = PathBuf::from(value("--cache")?),
            "--scenarios" => per_scenario = true,
            "--trace" => trace_path = Some(PathBuf::from(value("--trace")?)),
            "--backgrounds-only" => backgrounds_only = true,
            "--export" => {
                let index: usize = value("--export")?.parse().context("--export takes a scenario's number")?;
                export = Some((index, PathBuf::from(value("--export")?)));
            }
            other => anyhow::bail!(
                "unknown argument {other}; usage: campaign-grid --data DIR [--rules FILE] [--cache DIR] [--scenarios] \
                 [--backgrounds-only] [--trace FILE] [--export N DIR]"
            ),
        }
    }
    let data = data.context("--data DIR (the dev streams) is required")?;
    let mut config = Config::default();
    config.alerting.rules_file = rules_file.clone();
    let rules = config.alerting.rules()?;
    println!("rules: {}", rules_file.map_or("shipped (deploy/rules.toml)".to_owned(), |p| p.display().to_string()));
    let mut cache = DiskEmbeddingCache::open(&cache_dir, &config.embed)?;
    let stories = campaigns::load_stories(&Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns/stories.toml"))?;

    let streams = ["threads_rumoureval", "paraphrase_tweets_train", "summaries_cnn_dm", "cascades_weibo"];
    let mut loaded = Vec::new();
    for name in streams {
        loaded.push(load_stream(&data.join(format!("{name}.jsonl")))?);
    }
    let start = loaded.iter().filter_map(|posts| posts.first()).map(|p| p.created_at).min().context("no posts")?;
    let mut trace = match &trace_path {
        Some(path) => {
            let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
            writeln!(out, "{TRACE_COLUMNS}")?;
            let mut runs = std::io::BufWriter::new(std::fs::File::create(path.with_extension("runs"))?);
            writeln!(runs, "run\tposts")?;
            Some(Trace { out, runs, run: String::new() })
        }
        None => None,
    };

    println!("\nbackgrounds: pages and tickets per million posts (no campaign planted)");
    println!(
        "{:<20} {:<11} {:>8} {:>7} {:>8} {:>10} {:>12} {:>7}",
        "background", "half", "posts", "pages", "tickets", "pages /M", "tickets /M", "secs"
    );
    let backgrounds = if export.is_some() { Vec::new() } else { BACKGROUNDS.to_vec() };
    for (background, half) in backgrounds.iter().flat_map(|b| [(*b, Half::Fit), (*b, Half::Validation)]) {
        let halves: Vec<Vec<Post>> = loaded.iter().map(|stream| half_of(stream, half)).collect();
        let posts = background_posts(&halves, background, start);
        let started = Instant::now();
        let traced = trace.as_mut().map(|trace| {
            trace.run = format!("background:{}:{}", half.as_str(), background.name);
            (trace, start)
        });
        let report = run(&config, &rules, &mut cache, posts, Labels::default(), traced)?;
        let side = &report.sides[0];
        println!(
            "{:<20} {:<11} {:>8} {:>7} {:>8} {:>10.2} {:>12.2} {:>7.0}",
            background.name,
            half.as_str(),
            report.posts,
            side.pages,
            side.tickets,
            side.false_pages_per_million,
            side.false_tickets_per_million,
            started.elapsed().as_secs_f64()
        );
        for rule in report.rules.iter().filter(|rule| rule.fired[0] > 0) {
            println!("    {}: {}", rule.rule, rule.fired[0]);
        }
    }
    if backgrounds_only {
        return Ok(());
    }

    // The multi-platform streams, per background, for the scenarios' slices.
    let slices: Vec<Vec<Post>> =
        BACKGROUNDS.iter().map(|background| background_posts(&loaded[..3], *background, start)).collect();
    // Campaigns start at a post of the tweets or the articles, where the streams are dense: the
    // reply threads stretch over two years, and a campaign planted in one of their quiet months
    // would have no background around it.
    let anchor_pools: Vec<Vec<DateTime<Utc>>> = BACKGROUNDS
        .iter()
        .map(|background| background_posts(&loaded[1..3], *background, start).iter().map(|p| p.created_at).collect())
        .collect();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let started = Instant::now();
    for (index, scenario, story) in grid(&stories) {
        let background = (index / 2) % BACKGROUNDS.len();
        let pool = &slices[background];
        let anchors = &anchor_pools[background];
        let anchor = anchors[SplitMix(scenario.seed ^ 0xA5A5).below(anchors.len())];
        let tag = format!("g{index}");
        let planted = campaigns::campaign(story, &scenario, anchor, &tag);
        let labels = Labels(planted.iter().map(|p| (p.id.clone(), "campaign".to_owned())).collect());
        // Up to 1,000 background posts of the hour before and 2,000 of the hour and a half after.
        let at = pool.partition_point(|p| p.created_at < anchor);
        let before = pool[..at].iter().rev().take_while(|p| p.created_at >= anchor - Duration::hours(1)).take(1000);
        let after = pool[at..].iter().take_while(|p| p.created_at <= anchor + Duration::minutes(90)).take(2000);
        let mut posts: Vec<Post> = before.chain(after).cloned().collect();
        posts.extend(planted);
        posts.sort_by_key(|p| p.created_at);
        if let Some((wanted, dir)) = &export {
            if *wanted == index {
                write_scenario(dir, &posts, &labels)?;
                println!("scenario {index} written to {}: stream.jsonl and labels.tsv", dir.display());
                return Ok(());
            }
            continue;
        }
        let traced = trace.as_mut().map(|trace| {
            trace.run = format!(
                "scenario:{}:{}:{}:{}:{}:{}:{}",
                story.half.as_str(),
                scenario.pace_per_minute,
                scenario.platforms,
                scenario.automated_share,
                scenario.summary_rounds,
                story.name,
                BACKGROUNDS[background].name
            );
            (trace, anchor)
        });
        let report = run(&config, &rules, &mut cache, posts, labels, traced)?;
        let side = &report.sides[0];
        let timing = &side.campaigns[0];
        outcomes.push(Outcome {
            scenario,
            story: story.name.clone(),
            half: story.half,
            background: BACKGROUNDS[background].name,
            page_after: timing.first_page_after_secs,
            ticket_after: timing.first_ticket_after_secs,
            held_after: timing.first_held_page_after_secs,
            false_pages: side.false_pages_per_million * report.background_posts as f64 / 1e6,
        });
    }
    println!("\n{} scenarios in {:.0} s", outcomes.len(), started.elapsed().as_secs_f64());
    if per_scenario {
        println!(
            "\n{:>5} {:<11} {:>5} {:>9} {:>6} {:>6} {:<22} {:<16} {:>10} {:>10}",
            "#", "half", "pace", "platforms", "share", "rounds", "story", "background", "page", "ticket"
        );
        for (index, o) in outcomes.iter().enumerate() {
            let [pace, platforms, share, rounds] = o.grid_point();
            println!(
                "{index:>5} {:<11} {pace:>5} {platforms:>9} {share:>6} {rounds:>6} {:<22} {:<16} {:>10} {:>10}",
                o.half.as_str(),
                o.story,
                o.background,
                minutes(o.page_after),
                minutes(o.ticket_after)
            );
        }
    }
    for half in [Half::Fit, Half::Validation] {
        summarise(half, &outcomes);
    }
    Ok(())
}

/// What one scenario gave.
struct Outcome {
    scenario: Scenario,
    story: String,
    half: Half,
    background: &'static str,
    page_after: Option<f64>,
    ticket_after: Option<f64>,
    held_after: Option<f64>,
    false_pages: f64,
}

impl Outcome {
    /// Pace, platforms, share and rounds, as the tables print them.
    fn grid_point(&self) -> [String; 4] {
        let s = &self.scenario;
        [
            s.pace_per_minute.to_string(),
            s.platforms.to_string(),
            s.automated_share.to_string(),
            s.summary_rounds.to_string(),
        ]
    }

    fn must_page(&self) -> bool {
        self.scenario.platforms >= 4 && self.scenario.automated_share >= 0.5
    }
}

fn minutes(seconds: Option<f64>) -> String {
    seconds.map_or("never".to_owned(), |s| format!("{:.1} min", s / 60.0))
}

/// Prints one half's detection figures.
fn summarise(half: Half, outcomes: &[Outcome]) {
    let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.half == half).collect();
    let in_time = |o: &Outcome| o.page_after.is_some_and(|s| s <= PAGE_WITHIN_SECS);
    println!("\n{} half: {} scenarios", half.as_str(), mine.len());
    println!("  must page (>= 4 platforms, >= 50% automated or fresh): paged within 15 min, by background");
    for background in BACKGROUNDS.iter().map(|b| b.name).chain(["all"]) {
        let must: Vec<&&Outcome> =
            mine.iter().filter(|o| o.must_page() && (background == "all" || o.background == background)).collect();
        let mut times: Vec<f64> = must.iter().filter_map(|o| o.page_after).collect();
        times.sort_by(f64::total_cmp);
        let held = must.iter().filter(|o| !in_time(o) && o.held_after.is_some()).count();
        let paged = must.iter().filter(|o| in_time(o)).count();
        println!(
            "    {background:<18} {:>3} of {:>3}   median {:>9}, slowest {:>9}; held by the circuit breaker: {held}",
            paged,
            must.len(),
            minutes(times.get(times.len().saturating_sub(1) / 2).copied()),
            minutes(times.last().copied()),
        );
    }
    for o in mine.iter().filter(|o| o.must_page() && !in_time(o)) {
        let [pace, platforms, share, rounds] = o.grid_point();
        println!(
            "    missed: pace {pace} platforms {platforms} share {share} rounds {rounds} ({}, {}): page {}, ticket {}{}",
            o.story,
            o.background,
            minutes(o.page_after),
            minutes(o.ticket_after),
            o.held_after.map_or(String::new(), |s| format!(", page held at {}", minutes(Some(s))))
        );
    }
    let others: Vec<&&Outcome> = mine.iter().filter(|o| !o.must_page()).collect();
    let paged = others.iter().filter(|o| o.page_after.is_some()).count();
    let ticketed = others.iter().filter(|o| o.page_after.is_none() && o.ticket_after.is_some()).count();
    println!(
        "  the others (fewer platforms or fewer automated accounts): {paged} of {} paged, {ticketed} more ticketed",
        others.len()
    );
    let false_pages: f64 = mine.iter().map(|o| o.false_pages).sum();
    println!("  pages on background cascades of the scenarios' slices: {false_pages:.0}");
}

/// The grid: every combination twice, once with a story of each half (drawn per combination).
fn grid(stories: &[Story]) -> Vec<(usize, Scenario, &Story)> {
    let of_half = |half: Half| stories.iter().filter(move |s| s.half == half).collect::<Vec<_>>();
    let halves = [of_half(Half::Fit), of_half(Half::Validation)];
    let mut points = Vec::new();
    for pace in PACES {
        for platforms in PLATFORM_COUNTS {
            for share in SHARES {
                for rounds in ROUNDS {
                    for half in &halves {
                        let index = points.len();
                        let seed = SplitMix(index as u64 * 7919 + 17).next_u64();
                        let story = half[SplitMix(seed).below(half.len())];
                        let scenario = Scenario {
                            pace_per_minute: pace,
                            platforms,
                            automated_share: share,
                            summary_rounds: rounds,
                            seed,
                        };
                        points.push((index, scenario, story));
                    }
                }
            }
        }
    }
    points
}

/// Where `--trace` writes every feature row, and what the current run is.
struct Trace {
    out: std::io::BufWriter<std::fs::File>,
    /// `run<TAB>posts` per run, beside the trace (`FILE.runs`).
    runs: std::io::BufWriter<std::fs::File>,
    run: String,
}

/// The features `--trace` writes, in order.
const TRACE_COLUMNS: &str = "run\tcascade\tcampaign\tminutes\tsize\tplatforms\tdistinct_authors\tautomated_authors\t\
    automated_author_share\tfresh_authors\tminutes_active\tposts_per_minute\tautomated_share\tcoordination\t\
    automated_coordination\tsummary_depth\tautomated_summary_depth\tdepth\tplatforms_last_hour";

/// Links and scores `posts` in order with `rules`, in the replay's embedding batches; the report
/// of one rule set. With a trace, every post's cascade features (of cascades on three platforms or
/// more) are written, minutes counted from `origin`, the campaign's cascade marked.
fn run(
    config: &Config,
    rules: &RuleSet,
    cache: &mut DiskEmbeddingCache,
    posts: Vec<Post>,
    labels: Labels,
    mut trace: Option<(&mut Trace, DateTime<Utc>)>,
) -> anyhow::Result<echotrace::backtest::report::Report> {
    let campaign_posts: Vec<String> = labels.0.keys().cloned().collect();
    let mut backtest =
        Backtest::new(config.detector.clone(), vec![rules.clone()], &config.alerting.score_config(), labels);
    let mut rows: Vec<(f64, String, CascadeFeatures)> = Vec::new();
    let mut campaign_cascades = Vec::new();
    let preparer = backtest.detector().preparer();
    for batch in posts.chunks(config.embed.batch_size.max(1)) {
        let batch: Vec<PreparedPost> = batch.iter().map(|post| preparer.prepare(post.clone())).collect();
        let keys: Vec<(Option<u64>, &str)> = batch
            .iter()
            .map(|prepared| (backtest.detector().embedding_key(prepared), prepared.post.text.as_str()))
            .collect();
        let outcome = cache.embed_batch(&keys);
        if let Some(error) = outcome.failure {
            return Err(error).context("embedding");
        }
        for (prepared, embedding) in batch.into_iter().zip(outcome.embeddings) {
            let post = prepared.post.clone();
            let Some(cascade) = backtest.observe(prepared, embedding.as_deref()) else { continue };
            if campaign_posts.contains(&post.id) {
                campaign_cascades.push(cascade.clone());
            }
            if let Some((_, origin)) = &trace
                && let Some(features) = backtest.features(0, &cascade).filter(|f| f.platforms >= 3)
            {
                rows.push(((post.created_at - *origin).num_milliseconds() as f64 / 60_000.0, cascade, features));
            }
        }
    }
    if let Some((trace, _)) = &mut trace {
        let campaign: Vec<&str> = campaign_cascades.iter().map(|c| backtest.final_cascade(c)).collect();
        for (minutes, cascade, f) in &rows {
            writeln!(
                trace.out,
                "{}\t{}\t{}\t{minutes:.3}\t{}\t{}\t{}\t{}\t{:.4}\t{}\t{:.3}\t{:.3}\t{:.4}\t{}\t{}\t{}\t{}\t{}\t{}",
                trace.run,
                backtest.final_cascade(cascade),
                u8::from(campaign.contains(&backtest.final_cascade(cascade))),
                f.size,
                f.platforms,
                f.distinct_authors,
                f.automated_authors,
                f.automated_author_share,
                f.fresh_authors,
                f.minutes_active,
                f.posts_per_minute,
                f.automated_share,
                f.coordination,
                f.automated_coordination,
                f.summary_depth,
                f.automated_summary_depth,
                f.depth,
                f.platforms_last_hour
            )?;
        }
    }
    let report = backtest.finish(&["rules"]);
    if let Some((trace, _)) = &mut trace {
        writeln!(trace.runs, "{}\t{}", trace.run, report.posts)?;
    }
    Ok(report)
}

/// Writes one scenario's posts (`stream.jsonl`) and its campaign's ids (`labels.tsv`), for
/// `echotrace replay` and `echotrace backtest --labels`.
fn write_scenario(dir: &Path, posts: &[Post], labels: &Labels) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut stream = std::io::BufWriter::new(std::fs::File::create(dir.join("stream.jsonl"))?);
    for post in posts {
        serde_json::to_writer(&mut stream, post)?;
        writeln!(stream)?;
    }
    let mut ids: Vec<&String> = labels.0.keys().collect();
    ids.sort();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("labels.tsv"))?);
    writeln!(out, "post_id\tcampaign")?;
    for id in ids {
        writeln!(out, "{id}\tcampaign")?;
    }
    Ok(())
}

/// The first half of a stream's posts (fit) or the second (validation), by event time: the rules
/// are tuned on the first halves of the backgrounds and reported on the second.
fn half_of(stream: &[Post], half: Half) -> Vec<Post> {
    let middle = stream.len().div_ceil(2);
    match half {
        Half::Fit => stream[..middle].to_vec(),
        Half::Validation => stream[middle..].to_vec(),
    }
}

/// A stream's posts, in event-time order.
fn load_stream(path: &Path) -> anyhow::Result<Vec<Post>> {
    let latest = echotrace::replay::REPLAY_LATEST - echotrace_core::post::MAX_FUTURE_SKEW;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut posts: Vec<Post> =
        text.lines().filter_map(|line| Post::from_json_at(line.as_bytes(), latest).ok()).collect();
    posts.sort_by_key(|p| p.created_at);
    Ok(posts)
}

/// The streams moved to start at `start`, time-compressed and marked as `background` says, merged
/// by event time.
fn background_posts(streams: &[Vec<Post>], background: Background, start: DateTime<Utc>) -> Vec<Post> {
    let mut merged = Vec::new();
    for stream in streams {
        let Some(first) = stream.first().map(|p| p.created_at) else { continue };
        for post in stream {
            let mut post = post.clone();
            post.created_at = start + (post.created_at - first) / background.compression;
            let draw = xxhash_rust::xxh3::xxh3_64(post.author.id.as_bytes()) as f64 / u64::MAX as f64;
            if draw < background.bots {
                post.author.declared_automated = Some(true);
            } else if draw < background.bots * 1.2 {
                post.author.created_at = Some(post.created_at - Duration::days(3));
            }
            merged.push(post);
        }
    }
    merged.sort_by_key(|p| p.created_at);
    merged
}
