//! Amplification campaigns planted into real background streams, for the alerting rules' detection
//! table (`src/bin/campaign-grid.rs`).
//!
//! A campaign amplifies one story (`benches/campaigns/stories.toml`): its original, then copies,
//! light edits, plain reposts and summaries in up to three rounds (a summary of a summary of a
//! summary), posted at a given pace across a given number of platforms, a given share of them by
//! automated or fresh accounts. Every draw comes from a seed, so a scenario is the same posts on
//! every run.
//!
//! What is fixed by design and what is drawn:
//! - the first post on each of the campaign's platforms comes in order (a campaign pushes to every
//!   platform it uses early); later posts go to any of them;
//! - the share of automated or fresh accounts holds in every prefix of the campaign (post `i` is by
//!   such an account when `floor((i + 1) × share) > floor(i × share)`), so a scenario's share is
//!   what its first minutes show, not only its average; half of those accounts declare automation
//!   (bots, weeks to years old), half are days old and declare nothing (fresh accounts);
//! - the first summary of each round comes early (post 1, 3, 5), each later post is a copy, an edit,
//!   a repost or a summary of any round reached, and gaps between posts are the pace's ±40%.

use crate::SplitMix;
use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use echotrace_core::post::{Author, Post};
use serde::Deserialize;
use std::path::Path;

/// Which half of the grid a story belongs to: rules are tuned on one and reported on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Half {
    /// Stories the rules may be tuned on.
    Fit,
    /// Stories held out to report on.
    Validation,
}

impl Half {
    /// Its name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Half::Fit => "fit",
            Half::Validation => "validation",
        }
    }
}

/// One story a campaign amplifies.
#[derive(Debug, Clone, Deserialize)]
pub struct Story {
    /// Short name.
    pub name: String,
    /// Its half of the grid.
    pub half: Half,
    /// The original post.
    pub original: String,
    /// Summaries of the original.
    pub round1: Vec<String>,
    /// Summaries of round 1.
    pub round2: Vec<String>,
    /// Restatements of round 2.
    pub round3: Vec<String>,
}

impl Story {
    fn round(&self, round: usize) -> &[String] {
        match round {
            1 => &self.round1,
            2 => &self.round2,
            _ => &self.round3,
        }
    }
}

/// Reads the stories file.
pub fn load_stories(path: &Path) -> anyhow::Result<Vec<Story>> {
    #[derive(Deserialize)]
    struct File {
        story: Vec<Story>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for story in &file.story {
        anyhow::ensure!(
            [&story.round1, &story.round2, &story.round3].iter().all(|round| !round.is_empty()),
            "story {} needs at least one text in every round",
            story.name
        );
    }
    Ok(file.story)
}

/// One point of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Campaign posts per minute.
    pub pace_per_minute: f64,
    /// Platforms it spreads to.
    pub platforms: usize,
    /// Share of its posts by automated or fresh accounts.
    pub automated_share: f64,
    /// Rounds of summaries (0: copies, edits and reposts only).
    pub summary_rounds: usize,
    /// The draws' seed.
    pub seed: u64,
}

/// The platforms campaigns use, in the order a scenario's seed shuffles them.
pub const PLATFORMS: [&str; 6] = ["x", "bluesky", "mastodon", "threads", "reddit", "telegram"];

const PREFIXES: [&str; 6] =
    ["BREAKING: ", "Read this: ", "This needs to be seen. ", "Wow. ", "Thread: ", "Important: "];
const SUFFIXES: [&str; 6] = [" #opensource", " Share this.", " 🚨", " #truth", " Please repost.", " Unreal."];
const SYNONYMS: [(&str, &str); 10] = [
    ("quietly", "secretly"),
    ("refuses", "declines"),
    ("says", "claims"),
    ("accused", "blamed"),
    ("allegedly", "reportedly"),
    ("now", "right now"),
    ("claim", "allegation"),
    ("before", "ahead of"),
    ("new", "fresh"),
    ("full", "complete"),
];

/// A light edit of `text`: one or two of a prefix, a suffix, a synonym swap, or the last sentence
/// dropped, as people and bots retouch a copy.
pub fn light_edit(text: &str, rng: &mut SplitMix) -> String {
    let mut edited = text.trim().to_owned();
    for _ in 0..1 + rng.below(2) {
        match rng.below(4) {
            0 => edited = format!("{}{edited}", PREFIXES[rng.below(PREFIXES.len())]),
            1 => edited.push_str(SUFFIXES[rng.below(SUFFIXES.len())]),
            2 => {
                let (from, to) = SYNONYMS[rng.below(SYNONYMS.len())];
                if let Some(at) = edited.find(&format!(" {from} ")) {
                    edited.replace_range(at + 1..at + 1 + from.len(), to);
                } else {
                    edited.push_str(SUFFIXES[rng.below(SUFFIXES.len())]);
                }
            }
            _ => {
                let sentences: Vec<&str> = edited.split_inclusive(". ").collect();
                if sentences.len() >= 3 {
                    edited = sentences[..sentences.len() - 1].concat().trim_end().to_owned();
                } else {
                    edited = format!("{}{edited}", PREFIXES[rng.below(PREFIXES.len())]);
                }
            }
        }
    }
    edited
}

/// Campaign posts of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Copy,
    Edit,
    Repost,
    Summary(usize),
}

/// The campaign of `story` under `scenario`, starting at `start`; ids start with `tag`.
pub fn campaign(story: &Story, scenario: &Scenario, start: DateTime<Utc>, tag: &str) -> Vec<Post> {
    let mut rng = SplitMix(scenario.seed);
    let mut platforms: Vec<&str> = PLATFORMS.to_vec();
    for i in (1..platforms.len()).rev() {
        platforms.swap(i, rng.below(i + 1));
    }
    platforms.truncate(scenario.platforms.clamp(1, PLATFORMS.len()));
    let posts_total = ((scenario.pace_per_minute * 45.0).round() as usize).clamp(12, 60);
    let url = format!("https://{}.example/post/{}", story.name, scenario.seed % 1000);
    let share = scenario.automated_share;

    // (text, round, platform, url?) of every post so far, and whether it is a repost.
    struct Planted {
        text: String,
        round: usize,
        repost: bool,
    }
    let mut planted: Vec<Planted> = Vec::with_capacity(posts_total);
    let mut posts: Vec<Post> = Vec::with_capacity(posts_total);
    let mut used = [0usize; 4];
    let mut at = start;
    let mut next_platform = 0;
    for index in 0..posts_total {
        if index > 0 {
            let gap_secs = 60.0 / scenario.pace_per_minute * (0.6 + 0.8 * rng.below(1000) as f64 / 1000.0);
            at += Duration::milliseconds((gap_secs * 1000.0) as i64);
        }
        let mut kind = match index {
            0 => None,
            1 | 3 | 5 if index.div_ceil(2) <= scenario.summary_rounds => Some(Kind::Summary(index.div_ceil(2))),
            _ => {
                let reached = planted.iter().map(|p| p.round).max().unwrap_or(0);
                let roll = rng.below(100);
                Some(match (scenario.summary_rounds, roll) {
                    (0, 0..35) => Kind::Copy,
                    (0, 35..70) => Kind::Edit,
                    (0, _) => Kind::Repost,
                    (_, 0..20) => Kind::Copy,
                    (_, 20..40) => Kind::Edit,
                    (_, 40..60) => Kind::Repost,
                    (rounds, _) => Kind::Summary(1 + rng.below(rounds.min(reached + 1))),
                })
            }
        };
        // Reposts stay on their parent's platform, so they wait until every platform is reached.
        if kind == Some(Kind::Repost) && next_platform < platforms.len() {
            kind = Some(Kind::Copy);
        }
        // The parent: an earlier post that is not a repost, of the round below for a summary.
        let candidates: Vec<usize> = (0..planted.len())
            .filter(|&i| !planted[i].repost)
            .filter(|&i| match kind {
                Some(Kind::Summary(round)) => planted[i].round + 1 == round,
                _ => true,
            })
            .collect();
        let parent = (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len())]);
        let (text, round, repost_of) = match (kind, parent) {
            (None, _) | (_, None) => (story.original.trim().to_owned(), 0, None),
            (Some(Kind::Copy), Some(p)) => (planted[p].text.clone(), planted[p].round, None),
            (Some(Kind::Edit), Some(p)) => (light_edit(&planted[p].text, &mut rng), planted[p].round, None),
            (Some(Kind::Repost), Some(p)) => (String::new(), planted[p].round, Some(posts[p].id.clone())),
            (Some(Kind::Summary(round)), Some(_)) => {
                let texts = story.round(round);
                let text = &texts[used[round] % texts.len()];
                let reused = used[round] >= texts.len();
                used[round] += 1;
                (if reused { light_edit(text, &mut rng) } else { text.clone() }, round, None)
            }
        };
        let platform = match &repost_of {
            Some(_) => posts[parent.expect("a repost has a parent")].platform.clone(),
            None if next_platform < platforms.len() => {
                next_platform += 1;
                platforms[next_platform - 1].to_owned()
            }
            None => platforms[rng.below(platforms.len())].to_owned(),
        };
        let automated = ((index + 1) as f64 * share).floor() > (index as f64 * share).floor();
        let author = account(&mut rng, &format!("{tag}-a{index}"), at, automated);
        let keeps_url = repost_of.is_none() && rng.below(100) < if round == 0 { 50 } else { 25 };
        posts.push(Post {
            id: format!("{platform}:{tag}-{index}"),
            platform,
            author,
            created_at: at,
            text: text.clone(),
            lang: Some("en".into()),
            urls: if index == 0 || keeps_url { vec![url.clone()] } else { Vec::new() },
            mentions: Vec::new(),
            repost_of: repost_of.clone(),
            quote_of: None,
            reply_to: None,
        });
        planted.push(Planted { text, round, repost: repost_of.is_some() });
    }
    posts
}

/// An account: an automated or fresh one (half declare automation and are weeks to years old, half
/// are days old), or an established one (years old, with followers).
fn account(rng: &mut SplitMix, id: &str, at: DateTime<Utc>, automated: bool) -> Author {
    let days = |rng: &mut SplitMix, from: i64, to: i64| Duration::days(from + rng.below((to - from) as usize) as i64);
    let (age, declared, followers) = match (automated, rng.below(2)) {
        (true, 0) => (days(rng, 30, 900), Some(true), rng.below(500) as u64),
        (true, _) => (days(rng, 1, 6) + Duration::hours(rng.below(20) as i64), Some(false), rng.below(40) as u64),
        (false, _) => (days(rng, 400, 4000), Some(false), 50 + rng.below(20_000) as u64),
    };
    Author {
        id: id.to_owned(),
        handle: id.to_owned(),
        created_at: Some(at - age),
        followers: Some(followers),
        declared_automated: declared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn story() -> Story {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns/stories.toml");
        load_stories(&path).unwrap().remove(0)
    }

    #[test]
    fn a_campaign_keeps_its_share_platforms_and_rounds() {
        let scenario =
            Scenario { pace_per_minute: 1.0, platforms: 4, automated_share: 0.5, summary_rounds: 3, seed: 7 };
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let posts = campaign(&story(), &scenario, start, "t");
        assert_eq!(posts.len(), 45);
        let platforms: std::collections::BTreeSet<&str> = posts.iter().map(|p| p.platform.as_str()).collect();
        assert_eq!(platforms.len(), 4);
        let firsts: std::collections::BTreeSet<&str> = posts[..4].iter().map(|p| p.platform.as_str()).collect();
        assert_eq!(firsts.len(), 4, "the first posts reach every platform");
        for prefix in 2..posts.len() {
            let automated = posts[..prefix]
                .iter()
                .filter(|p| {
                    p.author.declared_automated == Some(true)
                        || p.author.created_at.is_some_and(|c| p.created_at - c < Duration::days(7))
                })
                .count();
            assert_eq!(automated, prefix / 2, "every prefix holds the share");
        }
        let story = story();
        assert!(story.round3.iter().any(|t| posts.iter().any(|p| p.text == *t)), "round 3 is reached");
        assert!(posts.windows(2).all(|w| w[0].created_at < w[1].created_at));
        assert!(posts.iter().any(|p| p.repost_of.is_some()));
    }

    #[test]
    fn a_scenario_is_the_same_posts_on_every_run() {
        let scenario =
            Scenario { pace_per_minute: 0.3, platforms: 6, automated_share: 0.7, summary_rounds: 1, seed: 3 };
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(campaign(&story(), &scenario, start, "t"), campaign(&story(), &scenario, start, "t"));
    }
}
