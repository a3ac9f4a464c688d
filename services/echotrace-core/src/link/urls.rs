//! Shared URLs: canonical forms, and the index of who shared each one first.
//!
//! Copies of a post often carry the same link with different tracking parameters; the canonical form
//! strips them (and the fragment), lower-cases the host, upgrades `http` to `https`, drops a trailing
//! slash and sorts what is left of the query. Links to a bare host (`https://example.com/`) are no
//! evidence that two posts share content, so they are not indexed.

use crate::link::shard::LinkShard;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use url::Url;
use xxhash_rust::xxh3::xxh3_64;

/// Query parameters that identify a click, not a resource.
const TRACKING_PARAMS: &[&str] = &[
    "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "igshid", "igsh", "mc_cid", "mc_eid", "ref_src",
    "ref_url", "s", "si", "spm", "share_id", "_hsenc", "_hsmi", "mkt_tok", "yclid", "twclid", "ttclid",
];

/// The canonical form of a URL, or `None` when it does not parse or names no resource. The
/// canonical form is its own canonical form.
pub fn canonical_url(raw: &str) -> Option<String> {
    // Trimming what trails a URL in a sentence can uncover more of it (a path ending in `:/`, a
    // sorted query ending in `.`): repeat until nothing changes (found by fuzzing).
    // A URL that does not settle within a few rounds is no URL anyone shares.
    let mut canonical = canonical_once(raw)?;
    for _ in 0..8 {
        let again = canonical_once(&canonical)?;
        if again == canonical {
            return Some(canonical);
        }
        canonical = again;
    }
    None
}

fn canonical_once(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_end_matches(['.', ',', ')', '!', '?', ';', ':', '"', '\'']);
    let with_scheme = if raw.starts_with("www.") { format!("https://{raw}") } else { raw.to_owned() };
    let mut url = Url::parse(&with_scheme).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    if url.scheme() == "http" {
        url.set_scheme("https").ok()?;
        if url.port() == Some(443) {
            url.set_port(None).ok()?;
        }
    }
    url.set_fragment(None);
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| !key.starts_with("utm_") && !TRACKING_PARAMS.contains(&key.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    params.sort();
    if params.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(params);
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if path.is_empty() && url.query().is_none() {
        return None;
    }
    url.set_path(&path);
    Some(url.into())
}

/// Finds the URLs written into a text (platforms do not always list them in `urls`).
pub fn urls_in_text(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c.is_ascii_control()).filter_map(|word| {
        let start = word.find("https://").or_else(|| word.find("http://"))?;
        Some(&word[start..])
    })
}

/// The first post in the window to share each canonical URL.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SharedUrlIndex {
    /// The URLs this index holds: all of them, or a linking shard's.
    shard: LinkShard,
    first: HashMap<u64, FirstShare>,
    ring: VecDeque<(i64, u64, u64)>,
}

/// The earliest post in the window that shared a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstShare {
    /// What the caller stored (the graph's node id).
    pub payload: u64,
    /// Its event time in milliseconds.
    pub created_at_ms: i64,
}

impl SharedUrlIndex {
    /// An empty index of one linking shard: it holds and answers for the URLs it owns
    /// ([`crate::link::shard`]).
    pub fn new_shard(shard: LinkShard) -> SharedUrlIndex {
        SharedUrlIndex { shard, ..SharedUrlIndex::default() }
    }

    /// The key a canonical URL is held under: its XXH3 hash.
    pub fn key(canonical: &str) -> u64 {
        xxh3_64(canonical.as_bytes())
    }

    /// The earliest post in the window that shared the URL with key `key` ([`Self::key`];
    /// `None` from a shard that does not own it: its owner answers).
    pub fn first_share(&self, key: u64) -> Option<FirstShare> {
        self.shard.owns(key).then(|| self.first.get(&key).copied()).flatten()
    }

    /// Records that a post shared the URL with key `key` (it becomes the first share if there is
    /// none; a shard records only the URLs it owns).
    pub fn record_share(&mut self, key: u64, payload: u64, created_at_ms: i64) {
        if !self.shard.owns(key) {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.first.entry(key) {
            entry.insert(FirstShare { payload, created_at_ms });
            self.ring.push_back((created_at_ms, key, payload));
        }
    }

    /// Forgets first shares older than `cutoff_ms`.
    pub fn evict_before(&mut self, cutoff_ms: i64) {
        self.evict_front_while(|at, _| at < cutoff_ms);
    }

    /// Forgets first shares whose payload (a node key, given in arrival order) is below `first_kept`.
    pub fn evict_payloads_below(&mut self, first_kept: u64) {
        self.evict_front_while(|_, payload| payload < first_kept);
    }

    /// Forgets first shares from the oldest while `evict(created_at_ms, payload)` says so.
    fn evict_front_while(&mut self, evict: impl Fn(i64, u64) -> bool) {
        while let Some(&(at, key, payload)) = self.ring.front() {
            if !evict(at, payload) {
                break;
            }
            self.ring.pop_front();
            if self.first.get(&key).is_some_and(|first| first.payload == payload) {
                self.first.remove(&key);
            }
        }
    }

    /// Number of URLs in the window.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether no URL is in the window.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_url_is_its_own_canonical_form() {
        // Found by fuzzing: the path ended in `:` once its trailing slashes were cut.
        for raw in ["http:)ttp:/`:J://", "https://e.example/a?z=b.&a=1", "https://e.example/x.:/.,/"] {
            let once = canonical_url(raw);
            assert_eq!(once.as_deref().and_then(canonical_url), once, "{raw}");
        }
    }

    #[test]
    fn strips_tracking_and_fragments_and_lowercases_the_host() {
        assert_eq!(
            canonical_url("http://News.Example.COM/story/42/?utm_source=x&id=7&fbclid=abc&a=1#top").as_deref(),
            Some("https://news.example.com/story/42?a=1&id=7")
        );
        assert_eq!(
            canonical_url("https://news.example.com/story/42?utm_medium=social"),
            canonical_url("HTTPS://NEWS.EXAMPLE.COM/story/42/")
        );
    }

    #[test]
    fn rejects_non_resources() {
        assert_eq!(canonical_url("https://example.com/"), None);
        assert_eq!(canonical_url("https://example.com/?utm_source=x"), None);
        assert_eq!(canonical_url("mailto:a@b.c"), None);
        assert_eq!(canonical_url("not a url"), None);
    }

    #[test]
    fn finds_urls_in_text() {
        let found: Vec<_> = urls_in_text("视频又被曝光http://t.cn/hgo3Ce and https://ex.com/a, ok").collect();
        assert_eq!(found, ["http://t.cn/hgo3Ce", "https://ex.com/a,"]);
        assert_eq!(canonical_url(found[1]).as_deref(), Some("https://ex.com/a"));
    }

    #[test]
    fn first_share_wins_until_evicted() {
        let mut index = SharedUrlIndex::default();
        let x = SharedUrlIndex::key("https://a/x");
        assert_eq!(index.first_share(x), None);
        index.record_share(x, 1, 10);
        index.record_share(x, 2, 20);
        assert_eq!(index.first_share(x), Some(FirstShare { payload: 1, created_at_ms: 10 }));
        index.evict_before(15);
        assert_eq!(index.first_share(x), None);
        index.record_share(x, 3, 30);
        assert_eq!(index.len(), 1);
    }
}
