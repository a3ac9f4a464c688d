//! The prepare stage, stateless: everything the detector needs from a post that the post alone
//! decides.
//!
//! [`Preparer::prepare`] normalizes the text once ([`mod@normalize`]) and computes from it the
//! simhash fingerprint ([`fingerprint`]), the MinHash signature, the canonical URLs, the content
//! words and the key of the text's embedding.
//! The [`crate::detector::Detector`] then reads them twice without recomputing them: once to
//! decide whether the post needs an embedding, once to link it.
//!
//! No state is kept between posts, so a batch is prepared across threads
//! ([`Preparer::prepare_all`]) with the same result as one post at a time. It is the first of the
//! stages that a deployment beyond one process would scale by the input's partitions
//! (`docs/scaling.md`).

use crate::detector::{DetectorConfig, text_key};
use crate::link::minhash::{self, Signature};
use crate::link::semantic::content_words;
use crate::link::urls::{canonical_url, urls_in_text};
use crate::parallel::map_in_order;
use crate::post::Post;
use crate::stage::Stage;
pub mod fingerprint;
pub mod normalize;

use fingerprint::{Features, Fingerprint};
use normalize::{Script, normalize};

/// The most distinct URLs of one post that link it: a post may carry thousands, each a lookup
/// and an index entry; the rest are stored with the post and not linked.
pub const MAX_LINKED_URLS: usize = 32;

/// Below this many posts per thread, a thread costs more to start than it saves (a post takes a
/// few microseconds to prepare, a scoped thread tens to start).
const POSTS_PER_THREAD: usize = 16;

/// A post with what the detector computes from it alone.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPost {
    /// The post itself.
    pub post: Post,
    /// The simhash of its normalized text and how many features went into it.
    pub fingerprint: Fingerprint,
    /// Its MinHash signature, when it has enough features to be linked by similarity.
    pub signature: Option<Signature>,
    /// The distinct canonical URLs it shares (sorted), when shared URLs link posts.
    pub canonical_urls: Vec<String>,
    /// Its content words ([`content_words`]), when semantic linking is on and it names no parent.
    pub content_words: Vec<u64>,
    /// The key of its text's embedding ([`text_key`]), when it may be linked by meaning: semantic
    /// linking is on, it names no parent, its text is not mostly CJK and has enough content words.
    /// Whether it is embedded also depends on what the window holds
    /// ([`crate::detector::Detector::embedding_key`]).
    pub embedding_key: Option<u64>,
}

impl PreparedPost {
    /// Whether its text carries enough features to be linked by similarity alone.
    pub fn similar_enough(&self, config: &DetectorConfig) -> bool {
        self.fingerprint.features >= config.min_features
    }
}

/// The stateless stage, configured by the detector's configuration.
#[derive(Debug, Clone)]
pub struct Preparer {
    min_features: u32,
    link_shared_urls: bool,
    semantic_min_words: Option<u32>,
}

impl Preparer {
    /// A preparer computing what a detector with `config` reads.
    pub fn new(config: &DetectorConfig) -> Preparer {
        Preparer {
            min_features: config.min_features,
            link_shared_urls: config.link_shared_urls,
            semantic_min_words: config.semantic.enabled.then_some(config.semantic.min_words),
        }
    }

    /// Prepares one post.
    pub fn prepare(&self, post: Post) -> PreparedPost {
        let normalized = normalize(&post.text);
        let features = Features::of(&normalized);
        let fingerprint = features.fingerprint();
        let signature = if fingerprint.features >= self.min_features { minhash::signature_of(&features) } else { None };
        let canonical_urls = if self.link_shared_urls { canonical_urls_of(&post) } else { Vec::new() };
        let (mut words, mut embedding_key) = (Vec::new(), None);
        if let Some(min_words) = self.semantic_min_words
            && post.explicit_references().next().is_none()
        {
            words = content_words(&normalized);
            // The shipped model reads English (and, poorly, other space-separated languages): texts
            // mostly in CJK script are linked lexically only, or any two of them would look alike.
            let cjk = normalized.tokens().filter(|(_, script)| *script == Script::Cjk).count();
            if cjk * 2 <= normalized.len() && words.len() >= min_words as usize {
                embedding_key = Some(text_key(&normalized));
            }
        }
        PreparedPost { post, fingerprint, signature, canonical_urls, content_words: words, embedding_key }
    }

    /// Prepares a batch, in order, split over at most `threads` threads: each post's result depends
    /// on it alone, so the split changes nothing but the time.
    pub fn prepare_all(&self, posts: Vec<Post>, threads: usize) -> Vec<PreparedPost> {
        map_in_order(posts, threads, POSTS_PER_THREAD, |post| self.prepare(post))
    }
}

/// The distinct canonical URLs a post shares, in its `urls` or in its text: the first
/// [`MAX_LINKED_URLS`] of them in order, sorted.
fn canonical_urls_of(post: &Post) -> Vec<String> {
    let mut canonical: Vec<String> = Vec::new();
    for url in post.urls.iter().map(String::as_str).chain(urls_in_text(&post.text)).filter_map(canonical_url) {
        if !canonical.contains(&url) {
            canonical.push(url);
            if canonical.len() == MAX_LINKED_URLS {
                break;
            }
        }
    }
    canonical.sort();
    canonical
}

impl Stage for Preparer {
    type Config = DetectorConfig;
    type Input<'a> = Post;
    type Output = PreparedPost;
    type State = ();
    type Metrics = ();

    fn empty(config: &DetectorConfig) -> Preparer {
        Preparer::new(config)
    }

    fn process(&mut self, batch: Vec<Post>, threads: usize) -> Vec<PreparedPost> {
        self.prepare_all(batch, threads)
    }

    fn state(&self) -> &() {
        &()
    }

    fn restore(config: &DetectorConfig, _: ()) -> Preparer {
        Preparer::new(config)
    }

    fn metrics(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(id: &str, text: &str, extra: &str) -> Post {
        Post::from_json(
            format!(
                r#"{{"id":"{id}","platform":"x","author":{{"id":"a","handle":"a"}},
                "created_at":"2026-11-01T09:00:00Z","text":"{text}"{extra}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_prepared_across_threads_equals_one_post_at_a_time() {
        let preparer = Preparer::new(&DetectorConfig::default());
        let posts: Vec<Post> = (0..100)
            .map(|i| {
                post(&format!("x:{i}"), &format!("post number {i} about the harbour bridge closing at {i} tonight"), "")
            })
            .collect();
        let one_at_a_time: Vec<PreparedPost> = posts.iter().cloned().map(|p| preparer.prepare(p)).collect();
        for threads in [1, 2, 3, 7] {
            assert_eq!(preparer.prepare_all(posts.clone(), threads), one_at_a_time, "{threads} threads");
        }
    }

    #[test]
    fn only_posts_that_may_be_linked_by_meaning_get_an_embedding_key() {
        let preparer = Preparer::new(&DetectorConfig::default());
        let plain = preparer.prepare(post("x:1", "The harbour bridge closes tonight for repairs", ""));
        assert!(plain.embedding_key.is_some());
        assert_eq!(plain.content_words.len(), 5, "harbour bridge closes tonight repairs");
        let reply =
            preparer.prepare(post("x:2", "The harbour bridge closes tonight for repairs", r#","reply_to":"x:1""#));
        assert_eq!((reply.embedding_key, reply.content_words.len()), (None, 0), "it names its parent");
        let short = preparer.prepare(post("x:3", "so it is", ""));
        assert_eq!(short.embedding_key, None, "too few content words");
        let cjk = preparer.prepare(post("x:4", "港珠澳大桥今晚关闭维修 bridge", ""));
        assert_eq!(cjk.embedding_key, None, "mostly CJK");
        let mut off = DetectorConfig::default();
        off.semantic.enabled = false;
        assert_eq!(
            Preparer::new(&off).prepare(post("x:5", "The harbour bridge closes tonight", "")).embedding_key,
            None
        );
    }

    #[test]
    fn urls_are_canonical_distinct_sorted_and_bounded() {
        let preparer = Preparer::new(&DetectorConfig::default());
        let urls: Vec<String> = (0..40).rev().map(|i| format!("\"https://example.org/{i:02}?utm_source=x\"")).collect();
        let many =
            preparer.prepare(post("x:1", "see https://example.org/39", &format!(r#","urls":[{}]"#, urls.join(","))));
        assert_eq!(many.canonical_urls.len(), MAX_LINKED_URLS);
        assert!(many.canonical_urls.windows(2).all(|pair| pair[0] < pair[1]), "sorted and distinct");
        assert!(many.canonical_urls.iter().all(|url| !url.contains("utm_source")), "canonical");
        let off = DetectorConfig { link_shared_urls: false, ..DetectorConfig::default() };
        assert!(Preparer::new(&off).prepare(post("x:2", "see https://example.org/1", "")).canonical_urls.is_empty());
    }

    #[test]
    fn short_texts_carry_no_signature() {
        let preparer = Preparer::new(&DetectorConfig::default());
        let short = preparer.prepare(post("x:1", "bridge closed", ""));
        assert!(short.fingerprint.features < 5 && short.signature.is_none());
        let long = preparer.prepare(post("x:2", "The harbour bridge closes tonight for urgent repairs", ""));
        assert!(long.signature.is_some());
    }
}
