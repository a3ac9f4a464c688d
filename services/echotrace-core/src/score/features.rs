//! Cascade features over a sliding window of event time, updated as posts arrive.
//!
//! Per cascade, [`CascadeActivity`] keeps the window's posts (time, author, whether the author looks
//! automated) and running totals (authors, posts per author, mentions), from which
//! [`CascadeActivity::features`] computes what the rules read:
//!
//! - `posts_per_minute` over the window, and its `acceleration` (the latest half of the window against
//!   the half before, in posts per minute per minute);
//! - `depth` (generations), `summary_depth` (rounds of re-summarising: 2 for a summary of a summary),
//!   `automated_summary_depth` (the same, counting only hops posted by automated-looking accounts),
//!   `size`, `platforms`, `distinct_authors`, `author_concentration` (share of the cascade's posts by
//!   its most active author);
//! - `automated_share`: share of the window's posts by accounts that declare automation, are younger
//!   than [`FRESH_ACCOUNT`] when they post, or post at bot cadence (3 posts in one cascade within a
//!   minute);
//! - `coordination`: distinct authors who posted co-similar text (a near-duplicate or shared-URL link to
//!   another author's post) within [`CO_SIMILAR_WITHIN`] of it, as the coordination-network literature
//!   defines co-similarity, found through the linking indexes rather than all pairs;
//!   `automated_coordination` counts those of them that look automated;
//! - over the cascade's life (as long as the scorer keeps it, `history_secs` after its last post):
//!   `automated_authors` and `fresh_authors` (distinct accounts that looked automated, or were
//!   younger than [`FRESH_ACCOUNT`], when they posted), `automated_author_share` (the first over
//!   all distinct authors), and `minutes_active` (event time since the cascade's first post), so a
//!   slow campaign that never fills a five-minute window still adds up; and
//!   `platforms_last_hour`, the distinct platforms of its posts in the last hour;
//! - `top_target`: the most-mentioned account.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// An account younger than this when it posts looks automated (or bought).
pub const FRESH_ACCOUNT: Duration = Duration::days(7);
/// Two authors posting co-similar text within this interval count as coordinated.
pub const CO_SIMILAR_WITHIN: Duration = Duration::minutes(10);
/// The span of `platforms_last_hour`.
const LAST_HOUR: Duration = Duration::hours(1);

/// Whether an account looks automated by what it says of itself when it posts at `at`: it declares
/// automation, or it is younger than [`FRESH_ACCOUNT`]. (Bot cadence is judged per cascade, later.)
pub fn account_looks_automated(declared_automated: bool, created_at: Option<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
    declared_automated || created_at.is_some_and(|created| at - created < FRESH_ACCOUNT)
}

/// The key an account is counted by: the 64-bit hash of its id. Held where the id was (in every
/// cascade's activity, and the scorer's recent authors), it keeps a string and its allocation off
/// each entry, and a copy of the state (a checkpoint's pause) copies plain numbers. Two accounts
/// whose ids share a hash would count as one: about one pair in 2^64.
pub fn author_key(author_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(author_id.as_bytes())
}

/// What the scorer needs to know about one post beyond the detection itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostSignals {
    /// The post's platform.
    pub platform: String,
    /// The author's account id.
    pub author_id: String,
    /// Whether the platform marks the account as automated.
    pub declared_automated: bool,
    /// When the account was created, if known.
    pub author_created_at: Option<DateTime<Utc>>,
    /// Accounts the post mentions.
    pub mentions: Vec<String>,
}

impl PostSignals {
    /// The signals a post carries about its author.
    pub fn of(post: &crate::post::Post) -> PostSignals {
        PostSignals {
            platform: post.platform.clone(),
            author_id: post.author.id.clone(),
            declared_automated: post.author.declared_automated.unwrap_or(false),
            author_created_at: post.author.created_at,
            mentions: post.mentions.clone(),
        }
    }
}

/// The features of one cascade at one moment of event time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CascadeFeatures {
    /// Posts in the cascade.
    pub size: u64,
    /// Posts per minute over the window.
    pub posts_per_minute: f64,
    /// Change of the posting rate between the two halves of the window, per minute.
    pub acceleration: f64,
    /// Deepest generation.
    pub depth: u32,
    /// The most semantic hops (paraphrase or summary edges) on a path from the root.
    #[serde(default)]
    pub summary_depth: u32,
    /// The most semantic hops on a path from the root posted by automated-looking accounts.
    #[serde(default)]
    pub automated_summary_depth: u32,
    /// Distinct platforms.
    pub platforms: u32,
    /// Distinct authors.
    pub distinct_authors: u32,
    /// Share of the cascade's posts by its most active author.
    pub author_concentration: f64,
    /// Share of the window's posts by automated-looking accounts.
    pub automated_share: f64,
    /// Distinct authors posting co-similar text within minutes of each other.
    pub coordination: u32,
    /// Those of `coordination`'s authors that look automated.
    #[serde(default)]
    pub automated_coordination: u32,
    /// Distinct accounts in the cascade that looked automated when they posted in it.
    #[serde(default)]
    pub automated_authors: u32,
    /// `automated_authors` over `distinct_authors`.
    #[serde(default)]
    pub automated_author_share: f64,
    /// Distinct accounts in the cascade younger than [`FRESH_ACCOUNT`] when they posted in it.
    #[serde(default)]
    pub fresh_authors: u32,
    /// Minutes of event time since the cascade's first post.
    #[serde(default)]
    pub minutes_active: f64,
    /// Distinct platforms among the cascade's posts of the last hour: how fast it crosses
    /// platforms now, where `platforms` counts them over its whole life.
    #[serde(default)]
    pub platforms_last_hour: u32,
    /// The most-mentioned account and how often.
    pub top_target: Option<(String, u32)>,
}

/// What the graph says of a cascade as one of its posts arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CascadeShape {
    /// Posts in the cascade.
    pub size: u64,
    /// Deepest generation.
    pub depth: u32,
    /// The most semantic hops on a path from the root.
    pub summary_depth: u32,
    /// The most semantic hops on a path from the root posted by automated-looking accounts.
    pub automated_summary_depth: u32,
    /// Distinct platforms.
    pub platforms: u32,
    /// Event time of its earliest post.
    pub first_seen: Option<DateTime<Utc>>,
}

/// One post in the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WindowPost {
    at: DateTime<Utc>,
    automated_looking: bool,
}

/// What the cascade has seen of one author.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AuthorActivity {
    posts: u32,
    /// The two latest post times: a third post within a minute of the first of them is bot cadence.
    recent: [Option<DateTime<Utc>>; 2],
    /// Looked automated on at least one of its posts here.
    automated_looking: bool,
    /// Was younger than [`FRESH_ACCOUNT`] on at least one of its posts here.
    fresh: bool,
}

/// The running activity of one cascade. Every update and every feature is O(1) amortized (the
/// half-window count is a binary search), so a viral cascade of thousands of posts a minute costs
/// no more per post than a small one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CascadeActivity {
    /// The window's posts in arrival order (event times nearly sorted).
    window: VecDeque<WindowPost>,
    automated_in_window: u32,
    /// Each author's index in `by_author`, by [`author_key`].
    authors: HashMap<u64, u32>,
    by_author: Vec<AuthorActivity>,
    top_author_posts: u32,
    automated_authors: u32,
    fresh_authors: u32,
    mentions: HashMap<String, u32>,
    top_target: Option<(String, u32)>,
    coordinated: HashSet<u32>,
    last_post_at: Option<DateTime<Utc>>,
    /// The latest post time on each platform.
    platform_last_post: HashMap<String, DateTime<Utc>>,
    shape: CascadeShape,
}

impl CascadeActivity {
    /// Records a post of the cascade. `co_similar_author` is the key ([`author_key`]) of the
    /// author of the post it copies, when it is linked by near-duplicate or shared URL to a post
    /// within [`CO_SIMILAR_WITHIN`].
    pub fn record(
        &mut self,
        at: DateTime<Utc>,
        signals: &PostSignals,
        co_similar_author: Option<u64>,
        shape: CascadeShape,
    ) {
        let author_key = author_key(&signals.author_id);
        let author = self.author_index(author_key) as usize;
        let activity = &mut self.by_author[author];
        activity.posts += 1;
        self.top_author_posts = self.top_author_posts.max(activity.posts);
        let [older, newer] = activity.recent;
        let bot_cadence = older.is_some_and(|first| at - first <= Duration::minutes(1)) && newer.is_some();
        activity.recent = [newer, Some(at)];
        let fresh = signals.author_created_at.is_some_and(|created| at - created < FRESH_ACCOUNT);
        let automated_looking = signals.declared_automated || fresh || bot_cadence;
        self.automated_authors += u32::from(automated_looking && !activity.automated_looking);
        self.fresh_authors += u32::from(fresh && !activity.fresh);
        activity.automated_looking |= automated_looking;
        activity.fresh |= fresh;
        self.automated_in_window += u32::from(automated_looking);
        self.window.push_back(WindowPost { at, automated_looking });
        self.last_post_at = Some(self.last_post_at.map_or(at, |last| last.max(at)));
        let latest = self.platform_last_post.entry(signals.platform.clone()).or_insert(at);
        *latest = (*latest).max(at);
        for mention in &signals.mentions {
            let account = mention.trim_start_matches('@').to_lowercase();
            let count = self.mentions.entry(account.clone()).or_default();
            *count += 1;
            if self.top_target.as_ref().is_none_or(|(_, top)| *count > *top) {
                self.top_target = Some((account, *count));
            }
        }
        if let Some(other) = co_similar_author.filter(|other| *other != author_key) {
            let other = self.author_index(other);
            self.coordinated.insert(author as u32);
            self.coordinated.insert(other);
        }
        self.shape = shape;
    }

    fn author_index(&mut self, author_key: u64) -> u32 {
        let next = self.authors.len() as u32;
        let index = *self.authors.entry(author_key).or_insert(next);
        if index == next {
            self.by_author.push(AuthorActivity::default());
        }
        index
    }

    /// Drops window posts older than `window` before `now`.
    pub fn slide(&mut self, now: DateTime<Utc>, window: Duration) {
        while self.window.front().is_some_and(|p| now - p.at > window) {
            let gone = self.window.pop_front().expect("checked");
            self.automated_in_window -= u32::from(gone.automated_looking);
        }
    }

    /// Event time of the newest post (also once it has left the window).
    pub fn last_post_at(&self) -> Option<DateTime<Utc>> {
        self.last_post_at
    }

    /// The features at `now`, over a window of `window`; call [`CascadeActivity::slide`] first.
    pub fn features(&self, now: DateTime<Utc>, window: Duration) -> CascadeFeatures {
        let minutes = (window.num_milliseconds() as f64 / 60_000.0).max(1e-9);
        let in_window = self.window.len() as f64;
        // Arrival order is event order up to small skew, so the half-window boundary is a search.
        // By logical index, not `VecDeque::partition_point`: on a window out of order by a few
        // posts, that one's answer depends on where the ring buffer wraps, which a replay or a
        // restored snapshot lays out differently.
        let half = window / 2;
        let (mut low, mut high) = (0, self.window.len());
        while low < high {
            let middle = (low + high) / 2;
            if now - self.window[middle].at > half { low = middle + 1 } else { high = middle }
        }
        let latest = (self.window.len() - low) as f64;
        let earlier = in_window - latest;
        let shape = self.shape;
        CascadeFeatures {
            size: shape.size,
            posts_per_minute: in_window / minutes,
            acceleration: (latest - earlier) / (minutes / 2.0) / (minutes / 2.0),
            depth: shape.depth,
            summary_depth: shape.summary_depth,
            automated_summary_depth: shape.automated_summary_depth,
            platforms: shape.platforms,
            distinct_authors: self.authors.len() as u32,
            author_concentration: if shape.size == 0 {
                0.0
            } else {
                f64::from(self.top_author_posts) / shape.size as f64
            },
            automated_share: if in_window == 0.0 { 0.0 } else { f64::from(self.automated_in_window) / in_window },
            coordination: self.coordinated.len() as u32,
            automated_coordination: self
                .coordinated
                .iter()
                .filter(|author| self.by_author[**author as usize].automated_looking)
                .count() as u32,
            automated_authors: self.automated_authors,
            automated_author_share: if self.authors.is_empty() {
                0.0
            } else {
                f64::from(self.automated_authors) / self.authors.len() as f64
            },
            fresh_authors: self.fresh_authors,
            minutes_active: shape
                .first_seen
                .map_or(0.0, |first| ((now - first).num_milliseconds() as f64 / 60_000.0).max(0.0)),
            platforms_last_hour: self.platform_last_post.values().filter(|at| now - **at <= LAST_HOUR).count() as u32,
            top_target: self.top_target.clone(),
        }
    }

    /// Folds another cascade's activity into this one (the cascades merged).
    pub fn absorb(&mut self, other: CascadeActivity) {
        let remap: HashMap<u32, u32> =
            other.authors.iter().map(|(&key, &index)| (index, self.author_index(key))).collect();
        for (index, theirs) in other.by_author.iter().enumerate() {
            let mine = &mut self.by_author[remap[&(index as u32)] as usize];
            mine.posts += theirs.posts;
            self.top_author_posts = self.top_author_posts.max(mine.posts);
            let mut times: Vec<DateTime<Utc>> = mine.recent.iter().chain(&theirs.recent).flatten().copied().collect();
            times.sort();
            let n = times.len();
            mine.recent = [n.checked_sub(2).map(|i| times[i]), times.last().copied()];
            self.automated_authors += u32::from(theirs.automated_looking && !mine.automated_looking);
            self.fresh_authors += u32::from(theirs.fresh && !mine.fresh);
            mine.automated_looking |= theirs.automated_looking;
            mine.fresh |= theirs.fresh;
        }
        self.last_post_at = self.last_post_at.max(other.last_post_at);
        for (platform, at) in other.platform_last_post {
            let latest = self.platform_last_post.entry(platform).or_insert(at);
            *latest = (*latest).max(at);
        }
        let mut merged: Vec<WindowPost> = self.window.drain(..).collect();
        merged.extend(other.window);
        merged.sort_by_key(|p| p.at);
        self.automated_in_window = merged.iter().filter(|p| p.automated_looking).count() as u32;
        self.window = merged.into();
        // In a fixed order, so that which of two equally mentioned accounts becomes the top target
        // does not depend on a hash map's iteration order, which differs from run to run.
        let mut mentions: Vec<(String, u32)> = other.mentions.into_iter().collect();
        mentions.sort_unstable();
        for (account, count) in mentions {
            let total = self.mentions.entry(account.clone()).or_default();
            *total += count;
            if self.top_target.as_ref().is_none_or(|(_, top)| *total > *top) {
                self.top_target = Some((account, *total));
            }
        }
        self.coordinated.extend(other.coordinated.iter().map(|a| remap[a]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + second, 0).unwrap()
    }

    fn signals(author: &str, automated: bool) -> PostSignals {
        PostSignals {
            platform: "x".into(),
            author_id: author.into(),
            declared_automated: automated,
            author_created_at: None,
            mentions: vec!["@Dana".into()],
        }
    }

    fn shape(size: u64, depth: u32, platforms: u32) -> CascadeShape {
        CascadeShape {
            size,
            depth,
            summary_depth: depth.saturating_sub(1),
            automated_summary_depth: 0,
            platforms,
            first_seen: Some(at(0)),
        }
    }

    #[test]
    fn rates_shares_and_targets() {
        let mut activity = CascadeActivity::default();
        let window = Duration::minutes(5);
        for i in 0..10 {
            activity.record(
                at(i * 15),
                &signals(&format!("a{i}"), i % 2 == 0),
                (i > 0).then(|| author_key("a0")),
                shape(i as u64 + 1, 1, 2),
            );
        }
        activity.slide(at(150), window);
        let features = activity.features(at(150), window);
        assert_eq!(features.size, 10);
        assert!((features.posts_per_minute - 2.0).abs() < 1e-9, "{features:?}");
        assert!((features.automated_share - 0.5).abs() < 1e-9);
        assert_eq!(features.distinct_authors, 10);
        assert!((features.author_concentration - 0.1).abs() < 1e-9);
        assert_eq!(features.coordination, 10);
        assert_eq!(features.top_target, Some(("dana".into(), 10)));
        assert!(features.acceleration > 0.0, "all posts in the latest half");
        activity.slide(at(1000), window);
        assert_eq!(activity.features(at(1000), window).posts_per_minute, 0.0);
    }

    #[test]
    fn bot_cadence_and_fresh_accounts_look_automated() {
        let mut activity = CascadeActivity::default();
        for i in 0..3 {
            activity.record(at(i * 10), &signals("busy", false), None, shape(i as u64 + 1, 0, 1));
        }
        let fresh = PostSignals { author_created_at: Some(at(-3600)), ..signals("new", false) };
        activity.record(at(40), &fresh, None, shape(4, 0, 1));
        activity.slide(at(40), Duration::minutes(5));
        let features = activity.features(at(40), Duration::minutes(5));
        assert!(
            (features.automated_share - 0.5).abs() < 1e-9,
            "third cadence post and the fresh account: {features:?}"
        );
    }

    #[test]
    fn a_merge_picks_the_same_top_target_among_equals_every_time() {
        let targets = |order: &[&str]| {
            let mut a = CascadeActivity::default();
            let mut b = CascadeActivity::default();
            for (i, account) in order.iter().enumerate() {
                let mentioning = PostSignals { mentions: vec![format!("@{account}")], ..signals("x", false) };
                b.record(at(i as i64), &mentioning, None, shape(i as u64 + 1, 0, 1));
            }
            let silent = PostSignals { mentions: Vec::new(), ..signals("y", false) };
            a.record(at(10), &silent, None, shape(1, 0, 1));
            a.absorb(b);
            a.features(at(10), Duration::minutes(5)).top_target
        };
        // Each mentioned once: the first in account order, whatever order the posts came in.
        for _ in 0..20 {
            assert_eq!(targets(&["dee", "cat", "bob", "ann"]), Some(("ann".into(), 1)));
        }
    }

    #[test]
    fn absorbing_merges_authors_and_windows() {
        let mut a = CascadeActivity::default();
        let mut b = CascadeActivity::default();
        a.record(at(0), &signals("x", false), None, shape(1, 0, 1));
        b.record(at(5), &signals("x", false), None, shape(1, 0, 1));
        b.record(at(6), &signals("y", false), Some(author_key("x")), shape(2, 1, 1));
        a.absorb(b);
        let features = a.features(at(10), Duration::minutes(5));
        assert_eq!(features.distinct_authors, 2);
        assert_eq!(features.coordination, 2);
        assert!((features.posts_per_minute - 0.6).abs() < 1e-9);
    }
}
