//! A generated stream of posts shared by the tests: a few stories, lightly edited, on four
//! platforms, by eight authors (one declared automated, three fresh), out of order, with
//! references to posts seen, unseen, later and themselves, and shared links.

use chrono::{DateTime, Duration};
use echotrace_core::post::{Author, Post};
use proptest::prelude::*;

/// The stories posts tell.
pub const SENTENCES: [&str; 6] = [
    "the harbour bridge closes tonight at nine for repairs says the city council",
    "maintainer rejected the security patches and hid the memory bug for months",
    "tap water in the north district is unsafe after the treatment plant failed",
    "the bank will freeze withdrawals on friday after the rescue deal collapsed",
    "our team finally won the derby after twelve long years of waiting",
    "volunteers are handing out bread at the market square this evening",
];
const EDITS: [&str; 4] = ["", "BREAKING: ", "wow ", "read this "];
const PLATFORMS: [&str; 4] = ["x", "bluesky", "mastodon", "threads"];

/// Two rules: spread across platforms (critical), automated authors (warning, pending first).
pub const RULES: &str = r#"
[[rule]]
name = "spread"
severity = "critical"
summary = "s"
keep_firing_secs = 300
[rule.when]
platforms_last_hour = ">= 2"
size = ">= 3"

[[rule]]
name = "bots"
severity = "warning"
summary = "s"
for_secs = 120
[rule.when]
automated_authors = ">= 2"
"#;

/// One generated post: its time offset in seconds, and what it says and links to.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Seconds after the stream's start.
    pub offset_secs: i64,
    /// Which platform.
    pub platform: usize,
    /// Which author.
    pub author: usize,
    /// Which story.
    pub sentence: usize,
    /// Which light edit of it.
    pub edit: usize,
    /// A repost (0), quote (1) or reply (2) of the post with this index.
    pub reference: Option<(u8, usize)>,
    /// Which shared link, if any.
    pub url: Option<usize>,
}

/// Any one post of a stream.
pub fn spec() -> impl Strategy<Value = Spec> {
    (
        0i64..14_400,
        0..PLATFORMS.len(),
        0usize..8,
        0..SENTENCES.len(),
        0..EDITS.len(),
        proptest::option::weighted(0.35, (0u8..3, 0usize..70)),
        proptest::option::weighted(0.2, 0usize..3),
    )
        .prop_map(|(offset_secs, platform, author, sentence, edit, reference, url)| Spec {
            offset_secs,
            platform,
            author,
            sentence,
            edit,
            reference,
            url,
        })
}

/// The post `index` of a stream as `spec` describes it.
pub fn post(index: usize, spec: &Spec) -> Post {
    let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let id = |i: usize| format!("{}:{i}", PLATFORMS[i % PLATFORMS.len()]);
    let mut post = Post {
        id: id(index),
        platform: PLATFORMS[spec.platform].to_owned(),
        author: Author {
            id: format!("a{}", spec.author),
            handle: format!("a{}", spec.author),
            created_at: Some(start - Duration::days(if spec.author < 3 { 2 } else { 900 })),
            followers: None,
            declared_automated: Some(spec.author == 7),
        },
        created_at: start + Duration::seconds(spec.offset_secs),
        text: format!("{}{}", EDITS[spec.edit], SENTENCES[spec.sentence]),
        lang: None,
        urls: spec.url.map(|u| vec![format!("https://example.org/story/{u}")]).unwrap_or_default(),
        mentions: Vec::new(),
        repost_of: None,
        quote_of: None,
        reply_to: None,
    };
    // References may name an earlier post, a later one, one never sent, or the post itself.
    if let Some((kind, target)) = spec.reference {
        let target = Some(id(target));
        match kind {
            0 => {
                post.repost_of = target;
                post.text.clear();
            }
            1 => post.quote_of = target,
            _ => post.reply_to = target,
        }
    }
    post
}
