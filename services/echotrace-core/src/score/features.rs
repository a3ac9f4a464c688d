//! Cascade features over a sliding window of event time, updated as posts arrive.
//!
//! Per cascade, [`CascadeActivity`] keeps the window's posts (time, author, whether the author looks
//! automated) and running totals (authors, posts per author, mentions), from which
//! [`CascadeActivity::features`] computes what the rules read:
//!
//! - `posts_per_minute` over the window, and its `acceleration` (the latest half of the window against
//!   the half before, in posts per minute per minute);
//! - `depth` (generations), `size`, `platforms`, `distinct_authors`, `author_concentration` (share of the
//!   cascade's posts by its most active author);
//! - `automated_share`: share of the window's posts by accounts that declare automation, are younger
//!   than [`FRESH_ACCOUNT`] when they post, or post at bot cadence (3 posts in one cascade within a
//!   minute);
//! - `coordination`: distinct authors who posted co-similar text (a near-duplicate or shared-URL link to
//!   another author's post) within [`CO_SIMILAR_WITHIN`] of it, as the coordination-network literature
//!   defines co-similarity, found through the linking indexes rather than all pairs;
//! - `top_target`: the most-mentioned account.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// An account younger than this when it posts looks automated (or bought).
pub const FRESH_ACCOUNT: Duration = Duration::days(7);
/// Two authors posting co-similar text within this interval count as coordinated.
pub const CO_SIMILAR_WITHIN: Duration = Duration::minutes(10);
/// Posts by one author in one cascade within a minute at which the author looks automated.
const BOT_CADENCE_POSTS: usize = 3;

/// What the scorer needs to know about one post beyond the detection itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PostSignals {
    /// The author's account id.
    pub author_id: String,
    /// Whether the platform marks the account as automated.
    pub declared_automated: bool,
    /// When the account was created, if known.
    pub author_created_at: Option<DateTime<Utc>>,
    /// Accounts the post mentions.
    pub mentions: Vec<String>,
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
    /// The most-mentioned account and how often.
    pub top_target: Option<(String, u32)>,
}

/// One post in the window.
#[derive(Debug, Clone)]
struct WindowPost {
    at: DateTime<Utc>,
    author: u32,
    automated_looking: bool,
}

/// The running activity of one cascade.
#[derive(Debug, Clone, Default)]
pub struct CascadeActivity {
    window: VecDeque<WindowPost>,
    authors: HashMap<String, u32>,
    posts_by_author: Vec<u32>,
    mentions: HashMap<String, u32>,
    coordinated: HashSet<u32>,
    size: u64,
    depth: u32,
    platforms: u32,
}

impl CascadeActivity {
    /// Records a post of the cascade. `co_similar_author` is the author of the post it copies, when
    /// it is linked by near-duplicate or shared URL to a post within [`CO_SIMILAR_WITHIN`].
    pub fn record(
        &mut self,
        at: DateTime<Utc>,
        signals: &PostSignals,
        co_similar_author: Option<&str>,
        size: u64,
        depth: u32,
        platforms: u32,
    ) {
        let author = self.author_index(&signals.author_id);
        self.posts_by_author[author as usize] += 1;
        let recent_by_author =
            self.window.iter().filter(|p| p.author == author && at - p.at <= Duration::minutes(1)).count();
        let fresh = signals.author_created_at.is_some_and(|created| at - created < FRESH_ACCOUNT);
        let automated_looking = signals.declared_automated || fresh || recent_by_author + 1 >= BOT_CADENCE_POSTS;
        self.window.push_back(WindowPost { at, author, automated_looking });
        for mention in &signals.mentions {
            *self.mentions.entry(mention.trim_start_matches('@').to_lowercase()).or_default() += 1;
        }
        if let Some(other) = co_similar_author.filter(|other| *other != signals.author_id) {
            let other = self.author_index(other);
            self.coordinated.insert(author);
            self.coordinated.insert(other);
        }
        self.size = size;
        self.depth = depth;
        self.platforms = platforms;
    }

    fn author_index(&mut self, author_id: &str) -> u32 {
        let next = self.authors.len() as u32;
        let index = *self.authors.entry(author_id.to_owned()).or_insert(next);
        if index == next {
            self.posts_by_author.push(0);
        }
        index
    }

    /// Drops window posts older than `window` before `now`.
    pub fn slide(&mut self, now: DateTime<Utc>, window: Duration) {
        while self.window.front().is_some_and(|p| now - p.at > window) {
            self.window.pop_front();
        }
    }

    /// Event time of the newest post.
    pub fn last_post_at(&self) -> Option<DateTime<Utc>> {
        self.window.back().map(|p| p.at)
    }

    /// The features at `now`, over a window of `window`.
    pub fn features(&self, now: DateTime<Utc>, window: Duration) -> CascadeFeatures {
        let minutes = (window.num_milliseconds() as f64 / 60_000.0).max(1e-9);
        let in_window: Vec<&WindowPost> = self.window.iter().filter(|p| now - p.at <= window && p.at <= now).collect();
        let half = window / 2;
        let latest = in_window.iter().filter(|p| now - p.at <= half).count() as f64;
        let earlier = in_window.len() as f64 - latest;
        let automated = in_window.iter().filter(|p| p.automated_looking).count() as f64;
        let top_author_posts = self.posts_by_author.iter().copied().max().unwrap_or(0) as f64;
        let top_target = self
            .mentions
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(account, count)| (account.clone(), *count));
        CascadeFeatures {
            size: self.size,
            posts_per_minute: in_window.len() as f64 / minutes,
            acceleration: (latest - earlier) / (minutes / 2.0) / (minutes / 2.0),
            depth: self.depth,
            platforms: self.platforms,
            distinct_authors: self.authors.len() as u32,
            author_concentration: if self.size == 0 { 0.0 } else { top_author_posts / self.size as f64 },
            automated_share: if in_window.is_empty() { 0.0 } else { automated / in_window.len() as f64 },
            coordination: self.coordinated.len() as u32,
            top_target,
        }
    }

    /// Folds another cascade's activity into this one (the cascades merged).
    pub fn absorb(&mut self, other: CascadeActivity) {
        let remap: HashMap<u32, u32> =
            other.authors.iter().map(|(id, &index)| (index, self.author_index(id))).collect();
        for (index, posts) in other.posts_by_author.iter().enumerate() {
            self.posts_by_author[remap[&(index as u32)] as usize] += posts;
        }
        let mut merged: Vec<WindowPost> = self.window.drain(..).collect();
        merged.extend(other.window.into_iter().map(|p| WindowPost { author: remap[&p.author], ..p }));
        merged.sort_by_key(|p| p.at);
        self.window = merged.into();
        for (account, count) in other.mentions {
            *self.mentions.entry(account).or_default() += count;
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
            author_id: author.into(),
            declared_automated: automated,
            author_created_at: None,
            mentions: vec!["@Dana".into()],
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
                (i > 0).then_some("a0"),
                i as u64 + 1,
                1,
                2,
            );
        }
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
            activity.record(at(i * 10), &signals("busy", false), None, i as u64 + 1, 0, 1);
        }
        let fresh = PostSignals { author_created_at: Some(at(-3600)), ..signals("new", false) };
        activity.record(at(40), &fresh, None, 4, 0, 1);
        let features = activity.features(at(40), Duration::minutes(5));
        assert!(
            (features.automated_share - 0.5).abs() < 1e-9,
            "third cadence post and the fresh account: {features:?}"
        );
    }

    #[test]
    fn absorbing_merges_authors_and_windows() {
        let mut a = CascadeActivity::default();
        let mut b = CascadeActivity::default();
        a.record(at(0), &signals("x", false), None, 1, 0, 1);
        b.record(at(5), &signals("x", false), None, 1, 0, 1);
        b.record(at(6), &signals("y", false), Some("x"), 2, 1, 1);
        a.absorb(b);
        let features = a.features(at(10), Duration::minutes(5));
        assert_eq!(features.distinct_authors, 2);
        assert_eq!(features.coordination, 2);
        assert!((features.posts_per_minute - 0.6).abs() < 1e-9);
    }
}
