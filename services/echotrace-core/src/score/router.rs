//! The router's part of scoring: what crosses cascades, and the records it sends their owners.
//!
//! A scorer is a router and owners of cascades ([`super::owner`]). The router sees every post in
//! the stream's order: it numbers them, keeps the recent authors of the whole stream (to find the
//! author a post copies), event time and when to sweep, and turns each detection into records for
//! the owners of the cascades it touches ([`ScoreRouter::route`]): a handover request to the owner
//! of each cascade the post merged away, the post to the owner of its cascade, and, at a sweep,
//! a sweep to every owner. A record says everything its owner needs, so owners never ask the
//! router or each other anything but the handovers; the records serialize, as the candidate-edge
//! topic of the staged design carries them (`docs/scaling.md`).

use super::features::{CO_SIMILAR_WITHIN, CascadeShape, PostSignals, author_key};
use super::owner::CascadeInfo;
use crate::detector::Detection;
use crate::detector::graph::CascadeId;
use crate::records::EdgeKind;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use xxhash_rust::xxh3::xxh3_64;

/// One record for the owner of a cascade, numbered by the post that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The router's number of the post (1 for the first), the same on every run over the same
    /// stream: what the gate orders the owners' events by.
    pub seq: u64,
    /// What the owner does.
    pub step: OwnerStep,
}

/// What an owner is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OwnerStep {
    /// Hand a cascade the post merged away over to the owner of the cascade it merged into.
    HandOver(HandOverStep),
    /// Take a post into its cascade and evaluate the rules on it.
    Post(Box<PostStep>),
    /// Re-evaluate the open alerts and forget idle cascades at `watermark`.
    Sweep {
        /// Event time.
        watermark: DateTime<Utc>,
        /// The cascade the post evaluated already.
        touched: CascadeId,
    },
}

/// A handover request: the `merge`-th merge of the post absorbed `absorbed` into `into`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandOverStep {
    /// The merge's place among the post's merges.
    pub merge: u32,
    /// The cascade merged away.
    pub absorbed: CascadeId,
    /// The cascade it merged into.
    pub into: CascadeId,
    /// Earlier merges of the same post into `absorbed` (a chain: the post's cascade merged into
    /// one that then merged into a third), whose handovers `absorbed` takes over first.
    pub awaits: Vec<u32>,
    /// Event time before the post, at which the absorbed cascade's alerts are judged.
    pub watermark: Option<DateTime<Utc>>,
    /// The post's time.
    pub at: DateTime<Utc>,
}

/// A post of `cascade`, with what the graph says of the cascade after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostStep {
    /// The post's cascade after its merges.
    pub cascade: CascadeId,
    /// The post's time for the scorer: its `created_at`, or event time if it is dated ahead.
    pub at: DateTime<Utc>,
    /// The post, which its alert events name as their trigger.
    pub post_id: String,
    /// What the post says of its author.
    pub signals: PostSignals,
    /// The key of the author of the post it copies, when there is one ([`author_key`]).
    pub co_similar_author: Option<u64>,
    /// The cascade's size, depths, platforms and first post.
    pub shape: CascadeShape,
    /// The cascade's root and platforms, which its alert events name.
    pub info: CascadeInfo,
    /// The post's merges into `cascade`, whose handovers it takes over first.
    pub awaits: Vec<u32>,
}

/// The router's state: the posts it numbered, the recent authors, event time and the last sweep.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScoreRouter {
    /// Posts routed.
    posts: u64,
    /// Authors of recent posts, for co-similarity: the hash of a post id ([`post_key`]) → its
    /// author's key ([`author_key`]) and event time.
    authors: HashMap<u64, (u64, DateTime<Utc>)>,
    /// The same posts in arrival order, to forget them past [`CO_SIMILAR_WITHIN`].
    authors_ring: VecDeque<(DateTime<Utc>, u64)>,
    watermark: Option<DateTime<Utc>>,
    last_sweep: Option<DateTime<Utc>>,
}

impl ScoreRouter {
    /// Event time: the latest post time routed.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// Posts routed: the number of the last one.
    pub fn routed(&self) -> u64 {
        self.posts
    }

    /// The records one detection makes, each with the owner (of `owners`) it goes to, in the
    /// order each owner takes them: the handover requests in the order of the merges, the post,
    /// then the sweep when `sweep_every` of event time has passed since the last.
    pub fn route(
        &mut self,
        detection: &Detection,
        signals: &PostSignals,
        sweep_every: Duration,
        owners: usize,
    ) -> Vec<(usize, OwnerRecord)> {
        self.posts += 1;
        let seq = self.posts;
        // A post dated ahead of event time counts at event time: it cannot move the scorer's clock
        // and resolve every open alert.
        let at = detection.post.created_at.min(detection.event_time);
        let cascade = printed(&detection.cascade.cascade_id);
        let merges: Vec<(CascadeId, CascadeId)> = detection
            .merges
            .iter()
            .map(|merge| (printed(&merge.absorbed_cascade_id), printed(&merge.into_cascade_id)))
            .collect();
        let into = |target: CascadeId, before: usize| -> Vec<u32> {
            (0..before).filter(|&j| merges[j].1 == target).map(|j| j as u32).collect()
        };
        let mut records = Vec::with_capacity(merges.len() + 1);
        for (i, &(absorbed, into_cascade)) in merges.iter().enumerate() {
            let step = HandOverStep {
                merge: i as u32,
                absorbed,
                into: into_cascade,
                awaits: into(absorbed, i),
                watermark: self.watermark,
                at,
            };
            records.push((absorbed.partition(owners), OwnerRecord { seq, step: OwnerStep::HandOver(step) }));
        }
        let co_similar_author = detection
            .edges
            .iter()
            .filter(|e| matches!(e.kind, EdgeKind::NearDuplicate | EdgeKind::SharedUrl))
            .filter(|e| e.time_delta_ms.is_some_and(|d| d.abs() <= CO_SIMILAR_WITHIN.num_milliseconds()))
            .find_map(|e| {
                let other = if e.child_id == detection.post.post_id { &e.parent_id } else { &e.child_id };
                self.authors.get(&post_key(other)).map(|&(author, _)| author)
            });
        self.remember_author(&detection.post.post_id, &signals.author_id, at);
        let record = &detection.cascade;
        let post = PostStep {
            cascade,
            at,
            post_id: detection.post.post_id.clone(),
            signals: signals.clone(),
            co_similar_author,
            shape: CascadeShape {
                size: record.size,
                depth: record.depth,
                summary_depth: record.summary_depth,
                automated_summary_depth: record.automated_summary_depth,
                platforms: record.platforms.len() as u32,
                first_seen: Some(record.first_seen),
            },
            info: CascadeInfo { root_post_id: record.root_post_id.clone(), platforms: record.platforms.clone() },
            awaits: into(cascade, merges.len()),
        };
        records.push((cascade.partition(owners), OwnerRecord { seq, step: OwnerStep::Post(Box::new(post)) }));
        let watermark = self.watermark.map_or(at, |w| w.max(at));
        self.watermark = Some(watermark);
        if self.last_sweep.is_none_or(|last| watermark - last >= sweep_every) {
            self.last_sweep = Some(watermark);
            for owner in 0..owners {
                records.push((owner, OwnerRecord { seq, step: OwnerStep::Sweep { watermark, touched: cascade } }));
            }
        }
        records
    }

    fn remember_author(&mut self, post_id: &str, author: &str, at: DateTime<Utc>) {
        let post = post_key(post_id);
        self.authors.insert(post, (author_key(author), at));
        self.authors_ring.push_back((at, post));
        let horizon = self.watermark.unwrap_or(at) - CO_SIMILAR_WITHIN;
        while self.authors_ring.front().is_some_and(|(t, _)| *t < horizon) {
            let (_, post) = self.authors_ring.pop_front().expect("checked");
            self.authors.remove(&post);
        }
    }
}

/// The key a recent post is found by among the recent authors: the 64-bit hash of its id (two
/// posts of ten minutes sharing one: about one pair in 2^64).
fn post_key(post_id: &str) -> u64 {
    xxh3_64(post_id.as_bytes())
}

/// The id of a cascade the detector printed: every detection's and merge's cascade ids are.
fn printed(cascade_id: &str) -> CascadeId {
    CascadeId::parse(cascade_id).expect("the cascade graph prints every cascade id it gives")
}
