//! Figures of durable state: what a snapshot costs to write, how big it is per live post, how long
//! a restart takes to restore it, and the pause a checkpoint adds to a fast stream.
//!
//! ```text
//! cargo run --release -p echotrace-benches --bin state-checkpoints
//! cargo run --release -p echotrace-benches --bin state-checkpoints -- --posts 200000 --semantic-posts 5000 --checkpoints 5
//! ```
//!
//! Three runs, each through the service's own `StateStore` (encoded in memory, then written to a
//! temporary file, fsync, rename, fsync of the folder; read, checksum, decode) and the detector and scorer with the
//! shipped rules, on synthetic posts (`src/synthetic.rs`: English and Chinese texts; a share are light
//! edits of recent posts, replies, reposts and posts sharing a URL, so there are cascades to keep):
//!
//! 1. **Lexical window**: `--posts` (default 1,000,000) spread evenly over the detector's 6-hour
//!    window, semantic linking off. Its resident memory, and the heap of each component (the
//!    graph, the linking indexes, the scorer), counted by the allocator as each is copied. Writes
//!    one snapshot and restores it.
//! 2. **Semantic window full**: `--semantic-posts` (default the window's bound, 50,000) posts with a
//!    384-dimensional embedding each (random unit vectors: the state's size and the restore's cost do
//!    not depend on what the vectors say), semantic linking on.
//! 3. **Checkpoint pause at `--rate` posts/s** (default 20,000): a stream at that rate through a
//!    window sized to hold `--posts` live posts (`window_secs = posts / rate`, and the scorer's
//!    `window_secs` and `history_secs` the same: one instance cannot hold 6 hours at that rate);
//!    `--pause-only` runs this part alone. After the window is full,
//!    `--checkpoints` snapshots (default 30), one every `--every` posts (default 100,000), each timed
//!    as the consumer waits for it (the copy of the state; the encoding, write and sync run on their
//!    own thread): p50, p99 and the backlog it leaves at that rate. The baseline in the same run is
//!    the whole write, which is what the consumer waited for when snapshots were written on its task.
//!
//! The baseline, in the same run: rebuilding the same state by processing its posts again (what
//! re-reading the window from Kafka would cost, before any broker I/O). Recovery after `kill -9` is the
//! restore plus re-processing the posts since the last snapshot: at most `rate × snapshot interval`.

use anyhow::Context;
use chrono::{DateTime, Duration as Delta, Utc};
use echotrace::config::Config;
use echotrace::state::StateStore;
use echotrace_benches::heap::{CountingAllocator, allocated_by};
use echotrace_benches::synthetic::{Language, light_edit, post_text};
use echotrace_benches::{SplitMix, percentile, resident_bytes};
use echotrace_core::detector::Detector;
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::{Author, Post};
use echotrace_core::score::alerts::Scorer;
use echotrace_core::score::features::PostSignals;
use echotrace_core::state::Position;
use std::time::{Duration, Instant};

/// Counts the heap of each component's copy (part 1); one relaxed load per allocation otherwise.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const USAGE: &str = "usage: state-checkpoints [--pause-only] [--posts N] [--semantic-posts N] [--rate POSTS_PER_S] [--checkpoints N] [--every POSTS]";
/// The embedding model's dimension.
const DIMENSION: usize = 384;
/// Platforms the synthetic posts come from.
const PLATFORMS: [&str; 4] = ["x", "bluesky", "mastodon", "reddit"];
/// Accounts the synthetic posts are written by.
const AUTHORS: usize = 200_000;
/// The default of `state.snapshot_interval_secs`.
const SNAPSHOT_INTERVAL_SECS: f64 = 30.0;

struct Options {
    pause_only: bool,
    posts: usize,
    semantic_posts: usize,
    rate: f64,
    checkpoints: usize,
    every: usize,
}

fn main() -> anyhow::Result<()> {
    let options = parse()?;
    let dir = tempfile::tempdir()?;
    println!("state-checkpoints: snapshots under {}", dir.path().display());

    if !options.pause_only {
        windows(&options, dir.path())?;
    }
    checkpoint_pauses(&options, dir.path())
}

/// Parts 1 and 2: a lexical window over 6 hours and a full semantic window, each written and
/// restored.
fn windows(options: &Options, dir: &std::path::Path) -> anyhow::Result<()> {
    println!("\n## 1. Lexical window: {} posts over 6 h, semantic linking off", options.posts);
    let config = config(dir, 6 * 3600, false);
    let span = Delta::hours(6);
    let step = span / options.posts.max(1) as i32;
    let rss_empty = resident_bytes()?;
    let mut run = Run::new(&config)?;
    let rebuild = run.feed(options.posts, step, false);
    // Grown by processing, as a running instance grows: the detector's and the scorer's state with
    // the spare capacity of their collections and the allocator's overhead. (The restore's figure
    // below reuses memory the dropped state left with the allocator, so it reads lower.)
    let live_state = resident_bytes()?.saturating_sub(rss_empty) as f64;
    println!(
        "resident memory of the state as processing grew it: {:.0} MB, {:.0} bytes per live post",
        live_state / 1e6,
        live_state / run.detector.window_len().max(1) as f64
    );
    by_component(&run);
    let restore = run.snapshot_and_restore()?;
    report(&run, rebuild, &restore);

    println!("\n## 2. Semantic window full: {} embedded posts", options.semantic_posts);
    let config = self::config(dir, 6 * 3600, true);
    let mut run = Run::new(&config)?;
    let rebuild = run.feed(options.semantic_posts, Delta::milliseconds(200), true);
    let restore = run.snapshot_and_restore()?;
    report(&run, rebuild, &restore);
    Ok(())
}

/// Where the state's heap goes: each component copied (a copy has its collections' exact
/// capacities, so the sum reads below the resident memory that growing them left).
fn by_component(run: &Run) {
    let live = run.detector.window_len().max(1) as f64;
    let (detector, detector_bytes) = allocated_by(|| run.detector.clone());
    let (graph, graph_bytes) = allocated_by(|| run.detector.graph().clone());
    let (scorer, scorer_bytes) = allocated_by(|| run.scorer.state().clone());
    drop((detector, graph, scorer));
    let indexes_bytes = detector_bytes.saturating_sub(graph_bytes);
    println!("heap by component (a copy of each), bytes per live post:");
    for (component, bytes) in [
        ("cascade graph (nodes, ids, text excerpts, evidence, cascades)", graph_bytes),
        ("linking indexes (simhash tables, MinHash bands, shared URLs, semantic window)", indexes_bytes),
        ("scorer (cascade activity, alert phases, recent authors)", scorer_bytes),
        ("all three", detector_bytes + scorer_bytes),
    ] {
        println!("  {component}: {:.0} MB, {:.0} bytes per live post", bytes as f64 / 1e6, bytes as f64 / live);
    }
}

/// Part 3: the pause each checkpoint adds to a stream at `options.rate`.
fn checkpoint_pauses(options: &Options, dir: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "\n## 3. Checkpoint pause at {:.0} posts/s, {} live posts, a snapshot every {} posts",
        options.rate, options.posts, options.every
    );
    // One instance cannot hold 6 hours at this rate (432M posts at 20,000 posts/s): the window is
    // sized to the live posts asked for, and the scorer keeps its cascades as long (its shipped
    // 5-minute rule window would hold 6M posts' activity here, its hour 72M).
    let window_secs = (options.posts as f64 / options.rate).ceil() as u64;
    let mut config = self::config(dir, window_secs, false);
    config.alerting.history_secs = window_secs;
    config.alerting.window_secs = window_secs;
    let step = Delta::microseconds((1e6 / options.rate) as i64);
    let mut run = Run::new(&config)?;
    run.feed(options.posts, step, false);
    let (mut pauses, mut detector_copies, mut whole_writes) = (Vec::new(), Vec::new(), Vec::new());
    let mut processing = Duration::ZERO;
    let mut bytes = 0;
    for _ in 0..options.checkpoints {
        processing += run.feed(options.every, step, false);
        // What the consumer waits for: the copy. The snapshot is encoded and written from it on a
        // thread of its own (here, after the copy is timed).
        let started = Instant::now();
        let detector = run.detector.clone();
        detector_copies.push(started.elapsed().as_secs_f64());
        let scorer = run.scorer.state().clone();
        pauses.push(started.elapsed().as_secs_f64());
        drop((detector, scorer));
        // The baseline: the whole snapshot written on the consumer, as before 2026-12-05.
        let started = Instant::now();
        bytes = run.write()?;
        whole_writes.push(started.elapsed().as_secs_f64());
    }
    pauses.sort_by(f64::total_cmp);
    whole_writes.sort_by(f64::total_cmp);
    detector_copies.sort_by(f64::total_cmp);
    let per_post = processing.as_secs_f64() / (options.checkpoints * options.every).max(1) as f64;
    let (p50, p99) = (percentile(&pauses, 0.5), percentile(&pauses, 0.99));
    println!(
        "live posts at each checkpoint: {}, cascades {}, last snapshot {:.1} MB",
        run.detector.window_len(),
        run.detector.graph().cascade_count(),
        bytes as f64 / 1e6
    );
    println!("processing: {:.0} posts/s (single thread)", 1.0 / per_post);
    println!(
        "checkpoint pause (the copy of the state) over {} checkpoints: p50 {p50:.3} s, p99 {p99:.3} s; the detector's part p50 {:.3} s, the rest the scorer's",
        pauses.len(),
        percentile(&detector_copies, 0.5)
    );
    println!(
        "baseline, the snapshot encoded and written on the consumer (before 2026-12-05): p50 {:.3} s, p99 {:.3} s; the pause is {:.1}x shorter (p50)",
        percentile(&whole_writes, 0.5),
        percentile(&whole_writes, 0.99),
        percentile(&whole_writes, 0.5) / p50.max(1e-9)
    );
    let spare = 1.0 - options.rate * per_post;
    if spare > 0.0 {
        println!(
            "at {:.0} posts/s a pause leaves a backlog of {:.0} posts (p99), caught up in {:.1} s at the processing rate",
            options.rate,
            p99 * options.rate,
            p99 * options.rate * per_post / spare
        );
    } else {
        println!(
            "processing ({:.0} posts/s) is slower than {:.0} posts/s even without checkpoints: the backlog never drains on one thread",
            1.0 / per_post,
            options.rate
        );
    }
    println!(
        "share of time paused with a snapshot every {SNAPSHOT_INTERVAL_SECS:.0} s (the default): {:.1}% (p50), {:.1}% (p99)",
        100.0 * p50 / SNAPSHOT_INTERVAL_SECS,
        100.0 * p99 / SNAPSHOT_INTERVAL_SECS
    );
    Ok(())
}

fn parse() -> anyhow::Result<Options> {
    let mut options = Options {
        pause_only: false,
        posts: 1_000_000,
        semantic_posts: 50_000,
        rate: 20_000.0,
        checkpoints: 30,
        every: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--pause-only" {
            options.pause_only = true;
            continue;
        }
        let value = args.next().with_context(|| format!("{arg} needs a value: {USAGE}"))?.replace('_', "");
        let number = |value: &str| value.parse::<usize>().with_context(|| format!("{arg} {value}: {USAGE}"));
        match arg.as_str() {
            "--posts" => options.posts = number(&value)?,
            "--semantic-posts" => options.semantic_posts = number(&value)?,
            "--rate" => options.rate = value.parse().with_context(|| format!("--rate {value}: {USAGE}"))?,
            "--checkpoints" => options.checkpoints = number(&value)?,
            "--every" => options.every = number(&value)?,
            _ => anyhow::bail!(USAGE),
        }
    }
    anyhow::ensure!(options.posts > 0 && options.rate > 0.0 && options.every > 0, USAGE);
    Ok(options)
}

/// The shipped configuration with snapshots under `dir`, a window of `window_secs` and semantic
/// linking on or off (its bound is the shipped one).
fn config(dir: &std::path::Path, window_secs: u64, semantic: bool) -> Config {
    let mut config = Config::default();
    config.state.dir = dir.to_owned();
    config.detector.window_secs = window_secs;
    config.detector.semantic.enabled = semantic;
    config
}

/// What a snapshot cost and gave back.
struct Restore {
    bytes: u64,
    write: Duration,
    restore: Duration,
    live_posts: usize,
    rss_before: u64,
    rss_restored: u64,
}

/// A detector and scorer fed with synthetic posts, and the store their snapshots go to.
struct Run {
    config: Config,
    detector: Detector,
    scorer: Scorer,
    store: StateStore,
    rng: SplitMix,
    /// Recent posts (id, text, first URL), for edits, replies and shared URLs.
    recent: Vec<(String, String, Option<String>)>,
    next_id: u64,
    clock: DateTime<Utc>,
}

impl Run {
    fn new(config: &Config) -> anyhow::Result<Run> {
        let scorer = Scorer::new(config.alerting.rules()?, &config.alerting.score_config());
        Ok(Run {
            config: config.clone(),
            detector: Detector::new(config.detector.clone()),
            scorer,
            store: StateStore::from_config(config)?.context("state.dir is set")?,
            rng: SplitMix(16),
            recent: Vec::new(),
            next_id: 0,
            clock: DateTime::from_timestamp(1_790_000_000, 0).expect("a valid time"),
        })
    }

    /// Processes `n` more posts, `step` apart, with a random unit embedding each when `embedded`;
    /// returns the time spent in the detector and scorer.
    fn feed(&mut self, n: usize, step: Delta, embedded: bool) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..n {
            let post = self.next_post();
            self.clock += step;
            let embedding = embedded.then(|| self.embedding());
            let started = Instant::now();
            let signals = PostSignals::of(&post);
            if let Some(detection) = self.detector.process_embedded(post, embedding.as_ref()) {
                self.scorer.observe(&detection, &signals);
            }
            spent += started.elapsed();
        }
        spent
    }

    /// Writes a snapshot; returns its bytes.
    fn write(&self) -> anyhow::Result<u64> {
        let position = Position { source: "posts".into(), partition: 0, offset: self.next_id as i64 };
        Ok(self.store.write(&self.detector, self.scorer.state(), &[position])?)
    }

    /// Writes a snapshot, drops the live state and restores it from the file.
    fn snapshot_and_restore(&mut self) -> anyhow::Result<Restore> {
        let live_posts = self.detector.window_len();
        let started = Instant::now();
        let bytes = self.write()?;
        let write = started.elapsed();
        self.detector = Detector::new(self.config.detector.clone());
        self.scorer = Scorer::new(self.config.alerting.rules()?, &self.config.alerting.score_config());
        let rss_before = resident_bytes()?;
        let started = Instant::now();
        let snapshot = self.store.read()?.context("the snapshot just written")?;
        self.detector = snapshot.detector;
        self.scorer.resume(snapshot.scorer);
        let restore = started.elapsed();
        anyhow::ensure!(self.detector.window_len() == live_posts, "the restored window differs");
        Ok(Restore { bytes, write, restore, live_posts, rss_before, rss_restored: resident_bytes()? })
    }

    fn next_post(&mut self) -> Post {
        let id = format!("x:{}", self.next_id);
        self.next_id += 1;
        let language = if self.rng.below(10) == 0 { Language::Chinese } else { Language::English };
        let mut post = Post {
            id: id.clone(),
            platform: PLATFORMS[self.rng.below(PLATFORMS.len())].into(),
            author: Author {
                id: format!("a{}", self.rng.below(AUTHORS)),
                handle: String::new(),
                created_at: None,
                followers: None,
                declared_automated: None,
            },
            created_at: self.clock,
            text: String::new(),
            lang: None,
            urls: Vec::new(),
            mentions: Vec::new(),
            repost_of: None,
            quote_of: None,
            reply_to: None,
        };
        let recent = (!self.recent.is_empty()).then(|| self.recent[self.rng.below(self.recent.len())].clone());
        match (self.rng.below(100), recent) {
            (0..15, Some((_, text, _))) => post.text = light_edit(&text, &mut self.rng),
            (15..25, Some((parent, _, _))) => {
                post.text = post_text(language, &mut self.rng);
                post.reply_to = Some(parent);
            }
            (25..30, Some((parent, text, _))) => {
                post.text = text;
                post.repost_of = Some(parent);
            }
            (30..35, Some((_, _, Some(url)))) => {
                post.text = post_text(language, &mut self.rng);
                post.urls = vec![url];
            }
            _ => {
                post.text = post_text(language, &mut self.rng);
                if self.rng.below(4) == 0 {
                    post.urls = vec![format!("https://news.example/{}", self.rng.next_u64())];
                }
            }
        }
        let entry = (id, post.text.clone(), post.urls.first().cloned());
        if self.recent.len() < 1000 {
            self.recent.push(entry);
        } else {
            let slot = self.rng.below(1000);
            self.recent[slot] = entry;
        }
        post
    }

    /// A random unit vector of the model's dimension.
    fn embedding(&mut self) -> TextEmbedding {
        let mut vector: Vec<f32> =
            (0..DIMENSION).map(|_| (self.rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32 - 0.5).collect();
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|v| *v /= norm);
        TextEmbedding { vectors: vector, dimension: DIMENSION, tokens: 24 }
    }
}

fn report(run: &Run, rebuild: Duration, restore: &Restore) {
    let live = restore.live_posts.max(1) as f64;
    let per_post = rebuild.as_secs_f64() / run.next_id.max(1) as f64;
    println!(
        "live posts: {} (semantic window {}), cascades {}",
        restore.live_posts,
        run.detector.semantic_window_len(),
        run.detector.graph().cascade_count()
    );
    println!("snapshot: {:.1} MB, {:.0} bytes per live post", restore.bytes as f64 / 1e6, restore.bytes as f64 / live);
    println!("write (encode, fsync, rename): {:.3} s", restore.write.as_secs_f64());
    println!(
        "restore (read, verify, decode, rebuild the indexes): {:.3} s, resident memory +{:.0} MB",
        restore.restore.as_secs_f64(),
        restore.rss_restored.saturating_sub(restore.rss_before) as f64 / 1e6
    );
    println!(
        "baseline, rebuilding by processing the window again: {:.3} s ({:.0} posts/s); restore is {:.1}x faster",
        rebuild.as_secs_f64(),
        1.0 / per_post,
        rebuild.as_secs_f64() / restore.restore.as_secs_f64()
    );
    println!(
        "recovery after kill -9: restore + re-processing the posts since the last snapshot = {:.2} s + {:.2} s per 100,000 posts",
        restore.restore.as_secs_f64(),
        100_000.0 * per_post
    );
}
