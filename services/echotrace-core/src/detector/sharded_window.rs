//! The detector's side of the lexical window split into linking shards
//! ([`crate::link::lexical_shard`]): [`ShardedWindow`] asks the shards (held in this process, a
//! batch side by side across threads, or running as the `link` stage and their answers given),
//! merges their answers and resolves each match's post key to the node placed under it.
//!
//! **The same links as one window.** The union of the shards' answers is one index's answer
//! (`link::shard`), so the detector chooses the same parents, and the sharded detector gives the
//! same rows as the whole one for posts in event-time order, which is what the order across
//! partitions delivers (`tests::sharded_detectors_give_what_one_window_gives`). What differs is
//! what a post's neighbours in a ring decide, since a shard's rings hold only its own keys' posts:
//!
//! - a late post (dated before posts that came ahead of it) leaves a ring when event time passes
//!   it and nothing newer stands before it: in a shard sooner than in one window, where more
//!   posts stand before it;
//! - a post delivered again (at least once delivery) is dropped by the detector, but a shard
//!   that holds none of its entries enters it: where the first share of one of its URLs has left
//!   the window, it becomes that URL's first share. Nothing changes while its URLs' first shares
//!   are in the window;
//! - the window's bound on posts (`max_window_posts`) evicts graph nodes, and one window drops
//!   their index entries with them; shards keep them until event time evicts them. A match on
//!   such a post resolves to no node and is dropped, but the post still holds its URLs' first
//!   shares, which one window would give to later posts;
//! - a duplicate delivery moves a shard's event clock (the detector drops it before its clock
//!   sees it); it moves it further only when the post is dated ahead of its first arrival and
//!   delivered again later.

use super::DetectorConfig;
use super::graph::{CascadeGraph, NodeKey};
use crate::link::lexical::{LexicalAnswer, LinkProbe};
use crate::link::lexical_shard::LexicalShard;
use crate::link::shard::LinkShard;
use crate::parallel::map_in_order;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Below this many posts in a batch, the shards answer on the calling thread: each answer takes a
/// few microseconds, a scoped thread tens to start.
const POSTS_PER_THREAD: usize = 16;

/// The detector's side of a window split into linking shards: the shards, when they are held in
/// this process (none where they run as the `link` stage and their answers are given), and the
/// node of each placed post's key, to resolve the shards' matches.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct ShardedWindow {
    shards: Vec<LexicalShard>,
    nodes: HashMap<u64, NodeKey>,
    /// Post keys in the order their posts were placed, forgotten from the front once their nodes
    /// have left the graph.
    placed: VecDeque<(NodeKey, u64)>,
}

impl ShardedWindow {
    /// `count` empty shards of the window `config` describes.
    pub fn new(config: &DetectorConfig, count: u32) -> ShardedWindow {
        ShardedWindow {
            shards: LinkShard::all(count).map(|shard| LexicalShard::new(config, shard)).collect(),
            nodes: HashMap::new(),
            placed: VecDeque::new(),
        }
    }

    /// The detector's side alone: the shards run elsewhere and their answers are given.
    pub fn answered_elsewhere() -> ShardedWindow {
        ShardedWindow { shards: Vec::new(), nodes: HashMap::new(), placed: VecDeque::new() }
    }

    /// Whether the shards run elsewhere.
    pub fn answers_elsewhere(&self) -> bool {
        self.shards.is_empty()
    }

    /// Placed posts whose keys are held to resolve matches (those of posts that left the graph
    /// are forgotten once no live post was placed before them).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every shard's answer to the next post of the stream, merged.
    pub fn answer(&mut self, probe: &LinkProbe, arrived_at: Option<DateTime<Utc>>) -> LexicalAnswer {
        LexicalAnswer::merged(self.shards.iter_mut().map(|shard| shard.answer(probe, arrived_at)))
    }

    /// The merged answers to the next posts of the stream, in order: each shard takes the batch
    /// in order, the shards side by side on at most `threads` threads.
    pub fn answer_batch(&mut self, posts: &[(LinkProbe, Option<DateTime<Utc>>)], threads: usize) -> Vec<LexicalAnswer> {
        let threads = if posts.len() >= POSTS_PER_THREAD { threads } else { 1 };
        let by_shard = map_in_order(self.shards.iter_mut().collect(), threads, 1, |shard: &mut LexicalShard| {
            posts.iter().map(|(probe, arrived_at)| shard.answer(probe, *arrived_at)).collect::<Vec<_>>()
        });
        let mut by_shard: Vec<_> = by_shard.into_iter().map(Vec::into_iter).collect();
        (0..posts.len())
            .map(|_| LexicalAnswer::merged(by_shard.iter_mut().map(|answers| answers.next().expect("one per post"))))
            .collect()
    }

    /// Every shard's answer for a post as the window stands, merged, changing nothing.
    pub fn lookup(&self, probe: &LinkProbe) -> LexicalAnswer {
        LexicalAnswer::merged(self.shards.iter().map(|shard| shard.lookup(probe)))
    }

    /// The live node of a match: the node placed under `post_key`, if it is still in the graph
    /// and was posted at `created_at_ms`.
    pub fn resolve(&self, graph: &CascadeGraph, post_key: u64, created_at_ms: i64) -> Option<NodeKey> {
        let key = *self.nodes.get(&post_key)?;
        graph.node(key).filter(|node| node.seen).and(graph.created_at_ms(key)).filter(|&at| at == created_at_ms)?;
        Some(key)
    }

    /// Records that the post with key `post_key` ([`crate::link::lexical::post_key`]) was placed
    /// as node `key`.
    pub fn placed(&mut self, post_key: u64, key: NodeKey) {
        self.nodes.insert(post_key, key);
        self.placed.push_back((key, post_key));
    }

    /// Forgets the keys of the oldest placed posts whose nodes have left the graph.
    pub fn forget_evicted(&mut self, graph: &CascadeGraph) {
        while let Some(&(key, post_key)) = self.placed.front() {
            if graph.node(key).is_some() {
                break;
            }
            self.placed.pop_front();
            if self.nodes.get(&post_key) == Some(&key) {
                self.nodes.remove(&post_key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::{BatchPost, Detection, Detector, LexicalWindow};
    use crate::link::lexical::post_key;
    use crate::post::Post;
    use proptest::prelude::*;
    use std::num::NonZeroU32;

    /// One post of a generated stream: which story it tells and how, what it shares and names.
    #[derive(Debug, Clone)]
    struct Step {
        story: usize,
        /// 0: the story as first told; 1 and 2: one or three words changed; 3: words of its own.
        edit: u8,
        /// Which of four URLs it shares (bits).
        urls: u8,
        /// Reposts the post this many steps back.
        reposts: Option<usize>,
        /// Delivered again: the post this many steps back, once more (while it is in the window).
        redelivers: Option<usize>,
        /// Seconds after the previous post.
        after_secs: i64,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = (0usize..6, 0u8..4, 0u8..16, prop::option::weighted(0.1, 1usize..20))
            .prop_flat_map(|(story, edit, urls, reposts)| {
                (Just((story, edit, urls, reposts)), prop::option::weighted(0.08, 1usize..6), 0i64..120)
            })
            .prop_map(|((story, edit, urls, reposts), redelivers, after_secs)| Step {
                story,
                edit,
                urls: urls & if urls > 9 { 0 } else { 0xF },
                reposts,
                redelivers,
                after_secs,
            });
        prop::collection::vec(step, 20..160)
    }

    /// The stream of posts the steps describe, one hour of event time or so.
    fn posts(steps: &[Step]) -> Vec<Post> {
        let start = DateTime::parse_from_rfc3339("2026-11-01T09:00:00Z").unwrap().timestamp();
        let mut at = start;
        let mut posts: Vec<Post> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if let Some(back) = step.redelivers.filter(|&back| back <= posts.len()) {
                posts.push(posts[posts.len() - back].clone());
                continue;
            }
            at += step.after_secs;
            let mut words: Vec<String> = (0..14).map(|w| format!("s{}w{w}", step.story)).collect();
            match step.edit {
                1 => words[3] = format!("edit{i}"),
                2 => (0..3).for_each(|w| words[w * 4] = format!("edit{i}x{w}")),
                3 => words.iter_mut().enumerate().for_each(|(w, word)| *word = format!("own{i}x{w}")),
                _ => {}
            }
            let urls: Vec<String> = (0..4)
                .filter(|bit| step.urls & (1 << bit) != 0)
                .map(|n| format!("\"https://example.org/{n}\""))
                .collect();
            let repost = match step.reposts.filter(|&back| back <= posts.len()) {
                Some(back) => format!(r#","repost_of":"{}""#, posts[posts.len() - back].id),
                None => String::new(),
            };
            let json = format!(
                r#"{{"id":"p:{i}","platform":"p{}","author":{{"id":"a{i}","handle":"h{i}"}},"created_at":"{}","text":"{}","urls":[{}]{repost}}}"#,
                i % 3,
                DateTime::from_timestamp(at, 0).unwrap().to_rfc3339(),
                words.join(" "),
                urls.join(","),
            );
            posts.push(Post::from_json(json.as_bytes()).unwrap());
        }
        posts
    }

    /// A window of 20 minutes, so that the stream's hour evicts.
    fn config(link_shards: u32) -> DetectorConfig {
        let link_shards = NonZeroU32::new(link_shards).unwrap();
        DetectorConfig { window_secs: 1200, allowed_lateness_secs: 1800, link_shards, ..DetectorConfig::default() }
    }

    /// Posts prepared for [`Detector::process_batch`], without embeddings or arrival times.
    fn batch_of(preparer: &crate::prepare::Preparer, posts: &[Post]) -> Vec<BatchPost<'static>> {
        posts
            .iter()
            .map(|post| BatchPost { prepared: preparer.prepare(post.clone()), embedding: None, arrived_at: None })
            .collect()
    }

    fn one_by_one(detector: &mut Detector, posts: &[Post]) -> Vec<Option<Detection>> {
        posts.iter().map(|post| detector.process(post.clone())).collect()
    }

    /// The first post whose detection differs, with both.
    fn first_difference(
        got: &[Option<Detection>],
        expected: &[Option<Detection>],
    ) -> Option<(usize, Option<Detection>, Option<Detection>)> {
        (0..got.len().max(expected.len()))
            .find(|&i| got.get(i) != expected.get(i))
            .map(|i| (i, got.get(i).cloned().flatten(), expected.get(i).cloned().flatten()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Copies, edits, shared URLs and reposts in event-time order (as the order across
        /// partitions delivers them), over a window that evicts, or with redeliveries over one
        /// that does not (the exceptions of the module doc): a detector whose lexical window is
        /// split into 2 to 5 linking shards gives the same detections (posts, edges with their
        /// evidence, merges, cascades) as one window, post by post, in batches whose shards
        /// answer side by side, and in batches answered by shards held apart from it.
        #[test]
        fn sharded_detectors_give_what_one_window_gives(
            mut steps in steps(),
            evicting in any::<bool>(),
            count in 2u32..6,
            batch in 1usize..40,
        ) {
            let config = |link_shards| match evicting {
                true => config(link_shards),
                false => DetectorConfig { window_secs: 6 * 3600, ..config(link_shards) },
            };
            if evicting {
                steps.iter_mut().for_each(|step| step.redelivers = None);
            }
            let posts = posts(&steps);
            let expected = one_by_one(&mut Detector::new(config(1)), &posts);
            let linked = expected.iter().flatten().filter(|d| !d.edges.is_empty()).count();
            prop_assume!(linked > 0);

            let mut sharded = Detector::new(config(count));
            prop_assert_eq!(first_difference(&one_by_one(&mut sharded, &posts), &expected), None, "one by one");

            let mut sharded = Detector::new(config(count));
            let preparer = sharded.preparer();
            let mut in_batches = Vec::new();
            for chunk in posts.chunks(batch) {
                let chunk = batch_of(&preparer, chunk);
                in_batches.extend(sharded.process_batch(chunk, 2));
            }
            prop_assert_eq!(first_difference(&in_batches, &expected), None, "in batches");

            // The shards apart from the detector, as the `link` stage runs them: each takes every
            // batch's probes and its answers cross the wire before they are merged.
            let mut detector = Detector::answered_elsewhere(config(count));
            let mut shards: Vec<LexicalShard> =
                LinkShard::all(count).map(|shard| LexicalShard::new(&config(count), shard)).collect();
            let mut answered = Vec::new();
            for chunk in posts.chunks(batch) {
                let chunk = batch_of(&preparer, chunk);
                let probes = detector.probes(chunk.iter().map(|post| &post.prepared));
                let mut by_shard: Vec<_> = shards
                    .iter_mut()
                    .map(|shard| {
                        let answers: Vec<LexicalAnswer> = probes.iter().map(|probe| shard.answer(probe, None)).collect();
                        let bytes = postcard::to_allocvec(&answers).unwrap();
                        postcard::from_bytes::<Vec<LexicalAnswer>>(&bytes).unwrap().into_iter()
                    })
                    .collect();
                let answers = (0..chunk.len())
                    .map(|_| LexicalAnswer::merged(by_shard.iter_mut().map(|answers| answers.next().unwrap())))
                    .collect();
                answered.extend(detector.process_answered(chunk, answers, 2));
            }
            prop_assert_eq!(first_difference(&answered, &expected), None, "answered elsewhere");
        }
    }

    #[test]
    fn a_match_resolves_only_to_a_live_node_posted_at_its_time() {
        let config = config(2);
        let mut detector = Detector::new(config.clone());
        let post =
            posts(&[Step { story: 1, edit: 0, urls: 0, reposts: None, redelivers: None, after_secs: 0 }]).remove(0);
        let created_at_ms = post.created_at.timestamp_millis();
        detector.process(post.clone()).unwrap();
        let LexicalWindow::Sharded(window) = &detector.lexical else { panic!("two shards make a sharded window") };
        let node = detector.graph.key_of(&post.id).unwrap();
        let key = post_key(&post.id);
        assert_eq!(window.resolve(&detector.graph, key, created_at_ms), Some(node));
        assert_eq!(window.resolve(&detector.graph, key, created_at_ms + 1), None, "another time: another post");
        assert_eq!(window.resolve(&detector.graph, key ^ 1, created_at_ms), None, "a key never placed");
    }
}
