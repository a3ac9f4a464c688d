//! The cascade graph: who derives from whom, in which cascade, at which generation.
//!
//! Every post is a node with at most one primary parent. A cascade is the tree hanging from its root
//! (the first post of it to arrive; with delivery out of order a later-arriving post may be older, and
//! `first_seen` is the earliest event time); when a post carries evidence into two cascades it bridges them, and they merge
//! through union-find into the one with the earlier root. The merge is returned so it can be recorded.
//!
//! A reference to a post not seen yet (it arrives later, or before the window) becomes a placeholder
//! node, so the child still gets its parent id; when the post itself arrives it fills the placeholder.
//!
//! Memory is bounded by the window: nodes live in arrival order in a ring and are evicted from its
//! front; a cascade is forgotten once its last post is older than the window.
//!
//! Most cascades are one post that nothing copies. Such a cascade's state is its root's (size,
//! platform, depths, times), so it is not held: the graph derives it from the node, and holds it
//! from the first change that makes them differ (a second post, a merge, a placeholder filled).
//! That keeps a record of some 260 bytes, with its map entry and allocations, off 0.69 of the
//! posts (`benches/README.md`, "Durable state").

use crate::records::{CascadeRecord, EdgeKind, MergeRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use xxhash_rust::xxh3::xxh3_64;

/// Longest text excerpt kept per node for the API.
const EXCERPT_CHARS: usize = 280;

/// A node's key: its arrival number. Keys are never reused.
pub type NodeKey = u64;

/// One post (or placeholder) in the graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    /// The post's id.
    pub post_id: Box<str>,
    /// Whether the post itself has been seen (false for a placeholder named by a child).
    pub seen: bool,
    platform: u16,
    author_handle: Box<str>,
    excerpt: Box<str>,
    created_at_ms: i64,
    /// The cascade the node joined; follow merges with [`CascadeGraph::cascade_of`].
    cascade: NodeKey,
    generation: u32,
    summary_depth: u32,
    automated_summary_depth: u32,
    parent: Option<(NodeKey, EdgeKind)>,
    /// What links the post to its primary parent, in words (empty for a root).
    parent_evidence: Box<str>,
    /// When its author's account was created, if the post said.
    account_created_ms: Option<i64>,
    /// Whether its account looks automated (declares automation or is freshly created).
    automated_account: bool,
    /// Evidence edges other than the primary parent (bridges to other cascades).
    extra_edges: Vec<(NodeKey, EdgeKind)>,
}

impl Node {
    /// The primary parent and the kind of its edge; `None` for a root.
    pub fn parent(&self) -> Option<(NodeKey, EdgeKind)> {
        self.parent
    }
}

/// Evidence linking a new post into another cascade, besides its primary parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bridge {
    /// The post in the other cascade.
    pub other: NodeKey,
    /// The kind of evidence.
    pub kind: EdgeKind,
    /// Whether the other post is the later one, so the edge points from it to the new post.
    pub other_is_later: bool,
}

/// Facts about a post needed to place it in the graph.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    /// The post's id.
    pub post_id: &'a str,
    /// Its platform.
    pub platform: &'a str,
    /// Its author's handle.
    pub author_handle: &'a str,
    /// Its text.
    pub text: &'a str,
    /// Its event time.
    pub created_at: DateTime<Utc>,
    /// Whether its account looks automated (declares automation or is freshly created).
    pub automated_account: bool,
    /// When its author's account was created, if the post said.
    pub account_created_at: Option<DateTime<Utc>>,
    /// What links it to its primary parent, in words (empty for a root).
    pub parent_evidence: &'a str,
}

/// A cascade's id as the graph and the scorer hold it: the hash its printed form
/// ([`cascade_id_for`], the rows' and alerts' `cascade_id`) shows in hexadecimal. Eight bytes where
/// a printed id, kept in the cascade, the map from ids to cascades and the scorer's maps, took
/// some fifty each time, for every cascade, most of which hold one post. Ordered as the printed
/// ids are (fixed-width lowercase hexadecimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CascadeId(u64);

impl CascadeId {
    /// The id of a cascade rooted at `root_post_id`.
    fn of(root_post_id: &str) -> CascadeId {
        CascadeId(xxh3_64(root_post_id.as_bytes()))
    }

    /// The id a printed one stands for; `None` for a string no cascade is printed as.
    pub fn parse(printed: &str) -> Option<CascadeId> {
        let digits = printed.strip_prefix('c').filter(|d| d.len() == 16)?;
        let lower_hex = digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        lower_hex.then(|| u64::from_str_radix(digits, 16).ok().map(CascadeId)).flatten()
    }

    /// Which of `partitions` (at least one) the cascade falls in: its hash modulo their number,
    /// as the scorer's owners of cascades split them ([`crate::score::owner`]).
    pub fn partition(self, partitions: usize) -> usize {
        (self.0 % partitions.max(1) as u64) as usize
    }
}

impl std::fmt::Display for CascadeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{:016x}", self.0)
    }
}

/// The aggregate state of one cascade.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cascade {
    id: CascadeId,
    root_post_id: Box<str>,
    size: u64,
    platforms: Vec<u16>,
    depth: u32,
    summary_depth: u32,
    automated_summary_depth: u32,
    first_seen_ms: i64,
    last_seen_ms: i64,
    merged_into: Option<NodeKey>,
    members: Vec<NodeKey>,
    /// The ids of every cascade merged into this one, directly or through a cascade it absorbed.
    absorbed_ids: Vec<CascadeId>,
}

impl Cascade {
    /// The state of the cascade whose only post is `root`, the node at `key`.
    fn of_one(key: NodeKey, root: &Node) -> Cascade {
        Cascade {
            id: CascadeId::of(&root.post_id),
            root_post_id: root.post_id.clone(),
            size: u64::from(root.seen),
            platforms: if root.seen { vec![root.platform] } else { Vec::new() },
            depth: root.generation,
            summary_depth: root.summary_depth,
            automated_summary_depth: root.automated_summary_depth,
            first_seen_ms: root.created_at_ms,
            last_seen_ms: root.created_at_ms,
            merged_into: None,
            members: vec![key],
            absorbed_ids: Vec::new(),
        }
    }
}

/// A node as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The post's id.
    pub post_id: String,
    /// Whether the post itself has been seen.
    pub seen: bool,
    /// Its platform.
    pub platform: String,
    /// Its author's handle.
    pub author_handle: String,
    /// The first characters of its text.
    pub excerpt: String,
    /// Its event time.
    pub created_at: DateTime<Utc>,
    /// Derivation depth.
    pub generation: u32,
    /// Semantic hops on its path from the root.
    pub summary_depth: u32,
    /// Its primary parent.
    pub parent_id: Option<String>,
    /// How it derives from its primary parent.
    pub parent_kind: Option<EdgeKind>,
    /// What links it to its primary parent, in words.
    pub parent_evidence: Option<String>,
    /// When its author's account was created, if the post said.
    pub account_created_at: Option<DateTime<Utc>>,
    /// Whether its account looks automated (declares automation or is freshly created).
    pub automated_account: bool,
}

/// An edge as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    /// The deriving post.
    pub child_id: String,
    /// The post it derives from.
    pub parent_id: String,
    /// The kind of derivation.
    pub kind: EdgeKind,
    /// Whether it is the child's primary parent.
    pub is_primary: bool,
    /// What links the two, in words (primary edges; a bridge says only its kind).
    pub evidence: Option<String>,
}

/// A cascade with its nodes and edges, for the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CascadeView {
    /// The cascade's aggregate state.
    pub cascade: CascadeRecord,
    /// Its posts in the window, in arrival order.
    pub nodes: Vec<NodeView>,
    /// The edges between them.
    pub edges: Vec<EdgeView>,
}

/// Where a new post landed.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Its key.
    pub key: NodeKey,
    /// Its generation.
    pub generation: u32,
    /// Semantic hops on its path from the root.
    pub summary_depth: u32,
    /// Its cascade's id after any merges.
    pub cascade_id: String,
    /// Merges this post caused.
    pub merges: Vec<MergeRecord>,
}

/// The graph of posts and cascades in the window.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct CascadeGraph {
    nodes: VecDeque<Node>,
    base_key: NodeKey,
    /// Each live post's node by the hash of its id ([`id_hash`]): the id itself is read from the
    /// node, so it is held once (a map keyed by the id held a second copy of every id).
    by_id_hash: HashMap<u64, NodeKey>,
    /// The nodes of the rare live ids whose hash an older live id holds in `by_id_hash`.
    colliding_ids: HashMap<Box<str>, NodeKey>,
    /// The cascades held, by their root's key: every cascade but those of one post whose state
    /// is their root's ([`CascadeGraph::cascade`]).
    cascades: HashMap<NodeKey, Cascade>,
    /// Every cascade's root by the cascade's id, held or not.
    cascade_keys: HashMap<CascadeId, NodeKey>,
    /// Cascades not merged into another, kept as a count: counting them is asked for every post.
    live_cascades: usize,
    platforms: Vec<String>,
}

impl CascadeGraph {
    /// The node of a post id, seen or placeholder.
    pub fn key_of(&self, post_id: &str) -> Option<NodeKey> {
        let by_hash = self.by_id_hash.get(&id_hash(post_id)).copied();
        by_hash
            .filter(|&key| self.node(key).is_some_and(|node| &*node.post_id == post_id))
            .or_else(|| self.colliding_ids.get(post_id).copied())
    }

    /// A node by key, if still in the window.
    pub fn node(&self, key: NodeKey) -> Option<&Node> {
        key.checked_sub(self.base_key).and_then(|offset| self.nodes.get(offset as usize))
    }

    fn node_mut(&mut self, key: NodeKey) -> Option<&mut Node> {
        key.checked_sub(self.base_key).and_then(|offset| self.nodes.get_mut(offset as usize))
    }

    /// The event time of a node, in milliseconds.
    pub fn created_at_ms(&self, key: NodeKey) -> Option<i64> {
        self.node(key).map(|node| node.created_at_ms)
    }

    /// Number of nodes in the window.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the window holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of live (unmerged) cascades.
    pub fn cascade_count(&self) -> usize {
        self.live_cascades
    }

    /// Returns the key of a post's node, adding a placeholder if it has not been seen.
    pub fn node_or_placeholder(&mut self, post_id: &str, seen_at: DateTime<Utc>) -> NodeKey {
        if let Some(key) = self.key_of(post_id) {
            return key;
        }
        let key = self.push_node(Node {
            post_id: post_id.into(),
            seen: false,
            platform: 0,
            author_handle: "".into(),
            excerpt: "".into(),
            created_at_ms: seen_at.timestamp_millis(),
            cascade: 0,
            generation: 0,
            summary_depth: 0,
            automated_summary_depth: 0,
            parent: None,
            parent_evidence: "".into(),
            account_created_ms: None,
            automated_account: false,
            extra_edges: Vec::new(),
        });
        self.new_cascade(key);
        key
    }

    fn push_node(&mut self, mut node: Node) -> NodeKey {
        let key = self.base_key + self.nodes.len() as NodeKey;
        node.cascade = key;
        match self.by_id_hash.entry(id_hash(&node.post_id)) {
            Entry::Vacant(entry) => {
                entry.insert(key);
            }
            Entry::Occupied(_) => {
                self.colliding_ids.insert(node.post_id.clone(), key);
            }
        }
        self.nodes.push_back(node);
        key
    }

    fn new_cascade(&mut self, root: NodeKey) {
        let node = self.node(root).expect("root just added");
        // A post id can root a second cascade while the first is still known (a reference to it
        // after its node left the window): the second takes the next free id, so no two cascades
        // the graph knows share one, and no row of one ever stands for the other.
        let mut id = CascadeId::of(&node.post_id);
        let mut incarnation = 1;
        while self.cascade_keys.contains_key(&id) {
            id = CascadeId::of(&format!("{}#{incarnation}", node.post_id));
            incarnation += 1;
        }
        // Held from the start only when its id is not the one its root's id gives.
        if incarnation > 1 {
            let cascade = Cascade { id, ..Cascade::of_one(root, node) };
            self.cascades.insert(root, cascade);
        }
        self.cascade_keys.insert(id, root);
        self.live_cascades += 1;
    }

    /// Whether the cascade rooted at `key` is one post's, not held: its state is its root's.
    fn is_of_one(&self, key: NodeKey) -> bool {
        !self.cascades.contains_key(&key) && self.node(key).is_some_and(|root| root.cascade == key)
    }

    /// The state of the cascade rooted at `key`: held, or derived from its only post.
    fn cascade(&self, key: NodeKey) -> Option<Cow<'_, Cascade>> {
        match self.cascades.get(&key) {
            Some(cascade) => Some(Cow::Borrowed(cascade)),
            None => {
                self.node(key).filter(|root| root.cascade == key).map(|root| Cow::Owned(Cascade::of_one(key, root)))
            }
        }
    }

    /// The state of the live cascade rooted at `key`, held from now on if it was not.
    fn cascade_mut(&mut self, key: NodeKey) -> &mut Cascade {
        if !self.cascades.contains_key(&key) {
            let cascade = self.cascade(key).expect("a live cascade's root").into_owned();
            self.cascades.insert(key, cascade);
        }
        self.cascades.get_mut(&key).expect("held")
    }

    /// The live cascade a node belongs to, following merges.
    pub fn cascade_of(&self, key: NodeKey) -> Option<NodeKey> {
        let mut cascade = self.node(key)?.cascade;
        if self.is_of_one(cascade) {
            return Some(cascade);
        }
        while let Some(next) = self.cascades.get(&cascade)?.merged_into {
            cascade = next;
        }
        Some(cascade)
    }

    /// Adds a seen post with its primary parent and other evidence edges; merges bridged cascades.
    ///
    /// If the post was a placeholder, the placeholder is filled and keeps its children.
    pub fn add_post(
        &mut self,
        facts: NodeFacts<'_>,
        parent: Option<(NodeKey, EdgeKind)>,
        bridges: Vec<Bridge>,
    ) -> Placement {
        let extra_edges: Vec<(NodeKey, EdgeKind)> =
            bridges.iter().filter(|b| !b.other_is_later).map(|b| (b.other, b.kind)).collect();
        let platform = self.intern_platform(facts.platform);
        let generation = parent.and_then(|(p, _)| self.node(p)).map_or(0, |p| p.generation + 1);
        let (summary_depth, automated_summary_depth) = parent
            .and_then(|(p, kind)| {
                let hop = u32::from(kind.is_semantic());
                let automated_hop = u32::from(kind.is_semantic() && facts.automated_account);
                self.node(p).map(|p| (p.summary_depth + hop, p.automated_summary_depth + automated_hop))
            })
            .unwrap_or((0, 0));
        let created_at_ms = facts.created_at.timestamp_millis();
        let excerpt: String = facts.text.chars().take(EXCERPT_CHARS).collect();
        let account_created_ms = facts.account_created_at.map(|time| time.timestamp_millis());
        let key = match self.key_of(facts.post_id) {
            Some(key) => {
                // Held before the node changes: the state of a placeholder's cascade of one is
                // the placeholder's.
                let cascade = self.cascade_of(key).expect("placeholder has a cascade");
                self.cascade_mut(cascade).size += 1;
                let node = self.node_mut(key).expect("indexed node is live");
                node.seen = true;
                node.platform = platform;
                node.author_handle = facts.author_handle.into();
                node.excerpt = excerpt.into();
                node.created_at_ms = created_at_ms;
                node.generation = generation;
                node.summary_depth = summary_depth;
                node.automated_summary_depth = automated_summary_depth;
                node.parent = parent;
                node.parent_evidence = facts.parent_evidence.into();
                node.account_created_ms = account_created_ms;
                node.automated_account = facts.automated_account;
                node.extra_edges = extra_edges.clone();
                key
            }
            None => {
                let key = self.push_node(Node {
                    post_id: facts.post_id.into(),
                    seen: true,
                    platform,
                    author_handle: facts.author_handle.into(),
                    excerpt: excerpt.into(),
                    created_at_ms,
                    cascade: 0,
                    generation,
                    summary_depth,
                    automated_summary_depth,
                    parent,
                    parent_evidence: facts.parent_evidence.into(),
                    account_created_ms,
                    automated_account: facts.automated_account,
                    extra_edges: extra_edges.clone(),
                });
                match parent.and_then(|(p, _)| self.cascade_of(p)) {
                    Some(cascade) => {
                        self.node_mut(key).expect("just added").cascade = cascade;
                        let state = self.cascade_mut(cascade);
                        state.size += 1;
                        state.members.push(key);
                    }
                    None => self.new_cascade(key),
                }
                key
            }
        };
        for bridge in bridges.iter().filter(|b| b.other_is_later) {
            if let Some(other) = self.node_mut(bridge.other) {
                other.extra_edges.push((key, bridge.kind));
            }
        }
        let mut cascade = self.cascade_of(key).expect("node has a cascade");
        // The post's own facts go in before any merge, which picks its survivor by first_seen; a
        // cascade of this post alone has them already.
        if !self.is_of_one(cascade) {
            self.add_facts(cascade, generation, summary_depth, automated_summary_depth, created_at_ms, platform);
        }
        let mut merges = Vec::new();
        for other in parent.map(|(p, _)| p).into_iter().chain(bridges.iter().map(|b| b.other)) {
            let Some(other_cascade) = self.cascade_of(other) else { continue };
            if other_cascade != cascade {
                let (records, survivor) = self.merge(cascade, other_cascade, facts.post_id, facts.created_at);
                merges.extend(records);
                cascade = survivor;
            }
        }
        let cascade_id = self.cascade(cascade).expect("live cascade").id.to_string();
        Placement { key, generation, summary_depth, cascade_id, merges }
    }

    /// Takes a post's depths, time and platform into the state of `cascade`.
    fn add_facts(
        &mut self,
        cascade: NodeKey,
        generation: u32,
        summary_depth: u32,
        automated_summary_depth: u32,
        created_at_ms: i64,
        platform: u16,
    ) {
        let state = self.cascade_mut(cascade);
        state.depth = state.depth.max(generation);
        state.summary_depth = state.summary_depth.max(summary_depth);
        state.automated_summary_depth = state.automated_summary_depth.max(automated_summary_depth);
        state.first_seen_ms = state.first_seen_ms.min(created_at_ms);
        state.last_seen_ms = state.last_seen_ms.max(created_at_ms);
        if let Err(at) = state.platforms.binary_search(&platform) {
            state.platforms.insert(at, platform);
        }
    }

    /// Merges two live cascades into the one with the earlier root; returns the records and the survivor.
    ///
    /// One record names the absorbed cascade; one more names each cascade it had absorbed before, so
    /// `cascade_merges` holds every id whose posts now belong to the survivor, and one join on it
    /// (the alert's SQL) finds them all however long the chain of merges.
    fn merge(&mut self, a: NodeKey, b: NodeKey, bridge: &str, at: DateTime<Utc>) -> (Vec<MergeRecord>, NodeKey) {
        let (first_a, first_b) = (self.cascade_mut(a).first_seen_ms, self.cascade_mut(b).first_seen_ms);
        let (survivor, absorbed) = if (first_a, a) <= (first_b, b) { (a, b) } else { (b, a) };
        let absorbed_state = self.cascades.get_mut(&absorbed).expect("live cascade");
        absorbed_state.merged_into = Some(survivor);
        self.live_cascades -= 1;
        let members = std::mem::take(&mut absorbed_state.members);
        // Every node points at the cascade it is in now, so eviction, which forgets absorbed
        // cascades with their last post, never leaves a node without one.
        for &member in &members {
            if let Some(node) = self.node_mut(member) {
                node.cascade = survivor;
            }
        }
        let absorbed_state = self.cascades.get_mut(&absorbed).expect("live cascade");
        let mut absorbed_ids = std::mem::take(&mut absorbed_state.absorbed_ids);
        absorbed_ids.insert(0, absorbed_state.id);
        let (size, depth, platforms) = (absorbed_state.size, absorbed_state.depth, absorbed_state.platforms.clone());
        let (summary_depth, automated_summary_depth) =
            (absorbed_state.summary_depth, absorbed_state.automated_summary_depth);
        let (first, last) = (absorbed_state.first_seen_ms, absorbed_state.last_seen_ms);
        let state = self.cascades.get_mut(&survivor).expect("live cascade");
        state.size += size;
        state.depth = state.depth.max(depth);
        state.summary_depth = state.summary_depth.max(summary_depth);
        state.automated_summary_depth = state.automated_summary_depth.max(automated_summary_depth);
        state.first_seen_ms = state.first_seen_ms.min(first);
        state.last_seen_ms = state.last_seen_ms.max(last);
        state.members.extend(members);
        for platform in platforms {
            if let Err(pos) = state.platforms.binary_search(&platform) {
                state.platforms.insert(pos, platform);
            }
        }
        let records = absorbed_ids
            .iter()
            .map(|absorbed_id| MergeRecord {
                absorbed_cascade_id: absorbed_id.to_string(),
                into_cascade_id: state.id.to_string(),
                bridging_post_id: bridge.to_owned(),
                merged_at: at,
            })
            .collect();
        state.absorbed_ids.extend(absorbed_ids);
        (records, survivor)
    }

    fn intern_platform(&mut self, platform: &str) -> u16 {
        match self.platforms.iter().position(|p| p == platform) {
            Some(index) => index as u16,
            None => {
                self.platforms.push(platform.to_owned());
                (self.platforms.len() - 1) as u16
            }
        }
    }

    /// The current state of the live cascade holding `key`.
    pub fn cascade_record_of(&self, key: NodeKey) -> Option<CascadeRecord> {
        let cascade = self.cascade_of(key)?;
        self.cascade(cascade).map(|state| self.record(&state))
    }

    fn record(&self, cascade: &Cascade) -> CascadeRecord {
        CascadeRecord {
            cascade_id: cascade.id.to_string(),
            root_post_id: cascade.root_post_id.to_string(),
            size: cascade.size,
            platforms: cascade
                .platforms
                .iter()
                .map(|&p| self.platforms[p as usize].clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            depth: cascade.depth,
            summary_depth: cascade.summary_depth,
            automated_summary_depth: cascade.automated_summary_depth,
            first_seen: millis_to_time(cascade.first_seen_ms),
            last_seen: millis_to_time(cascade.last_seen_ms),
        }
    }

    /// The `n` largest live cascades, largest first (ties: most recent activity first).
    pub fn top_cascades(&self, n: usize) -> Vec<CascadeRecord> {
        let held = self.cascades.values().map(Cow::Borrowed);
        let of_one = (self.base_key..self.base_key + self.nodes.len() as NodeKey)
            .filter(|key| !self.cascades.contains_key(key))
            .filter_map(|key| self.cascade(key));
        let mut live: Vec<Cow<'_, Cascade>> =
            held.chain(of_one).filter(|c| c.merged_into.is_none() && c.size > 0).collect();
        live.sort_by(|a, b| b.size.cmp(&a.size).then(b.last_seen_ms.cmp(&a.last_seen_ms)).then(a.id.cmp(&b.id)));
        live.into_iter().take(n).map(|c| self.record(&c)).collect()
    }

    /// A cascade by id (an absorbed id resolves to the cascade it merged into), with nodes and edges.
    pub fn cascade_view(&self, cascade_id: &str) -> Option<CascadeView> {
        let mut key = *self.cascade_keys.get(&CascadeId::parse(cascade_id)?)?;
        while let Some(next) = self.cascade(key)?.merged_into {
            key = next;
        }
        let cascade = self.cascade(key)?;
        let mut members: Vec<NodeKey> = cascade.members.iter().copied().filter(|&k| self.node(k).is_some()).collect();
        members.sort_unstable();
        let nodes = members.iter().filter_map(|&k| self.node_view(k)).collect();
        let mut edges = Vec::new();
        for &member in &members {
            let node = self.node(member).expect("filtered to live nodes");
            let primary = node.parent.map(|edge| (edge, true));
            for ((parent, kind), is_primary) in primary.into_iter().chain(node.extra_edges.iter().map(|&e| (e, false)))
            {
                if let Some(parent) = self.node(parent) {
                    edges.push(EdgeView {
                        child_id: node.post_id.to_string(),
                        parent_id: parent.post_id.to_string(),
                        kind,
                        is_primary,
                        evidence: is_primary.then(|| node.parent_evidence.to_string()),
                    });
                }
            }
        }
        Some(CascadeView { cascade: self.record(&cascade), nodes, edges })
    }

    /// A post and its primary ancestors, from the post up to its root.
    pub fn lineage(&self, post_id: &str) -> Option<Vec<NodeView>> {
        let mut key = self.key_of(post_id)?;
        let mut chain = Vec::new();
        loop {
            chain.push(self.node_view(key)?);
            match self.node(key)?.parent {
                Some((parent, _)) if chain.len() <= self.nodes.len() => key = parent,
                _ => return Some(chain),
            }
        }
    }

    fn node_view(&self, key: NodeKey) -> Option<NodeView> {
        let node = self.node(key)?;
        let parent = node.parent.and_then(|(p, kind)| self.node(p).map(|p| (p.post_id.to_string(), kind)));
        Some(NodeView {
            post_id: node.post_id.to_string(),
            seen: node.seen,
            platform: if node.seen { self.platforms[node.platform as usize].clone() } else { String::new() },
            author_handle: node.author_handle.to_string(),
            excerpt: node.excerpt.to_string(),
            created_at: millis_to_time(node.created_at_ms),
            generation: node.generation,
            summary_depth: node.summary_depth,
            parent_evidence: parent.is_some().then(|| node.parent_evidence.to_string()),
            parent_id: parent.as_ref().map(|(id, _)| id.clone()),
            parent_kind: parent.map(|(_, kind)| kind),
            account_created_at: node.account_created_ms.map(millis_to_time),
            automated_account: node.automated_account,
        })
    }

    /// Forgets nodes that arrived before the first one at or after `cutoff_ms`, and cascades whose
    /// last post is older than the cutoff. Returns how many nodes were evicted.
    pub fn evict_before(&mut self, cutoff_ms: i64) -> usize {
        self.evict_front_while(cutoff_ms, |_, node| node.created_at_ms < cutoff_ms)
    }

    /// Forgets the `count` nodes that arrived first, whatever their time, and the cascades left
    /// without a node (absorbed ones included: their ids stop resolving). Returns the key of the
    /// first node kept: the indexes evict their entries below it.
    pub fn evict_oldest(&mut self, count: usize) -> NodeKey {
        let first_kept = self.base_key + count.min(self.nodes.len()) as NodeKey;
        self.evict_front_while(i64::MAX, |key, _| key < first_kept);
        first_kept
    }

    /// Forgets nodes from the oldest arrival while `evict(key, node)` says so, then the cascades
    /// with no node left whose last post is older than `cutoff_ms`.
    fn evict_front_while(&mut self, cutoff_ms: i64, evict: impl Fn(NodeKey, &Node) -> bool) -> usize {
        let mut evicted = 0;
        while self.nodes.front().is_some_and(|node| evict(self.base_key, node)) {
            if self.is_of_one(self.base_key) {
                // Its cascade goes with it (its last post is this one, evicted).
                let root = self.nodes.front().expect("checked");
                self.cascade_keys.remove(&CascadeId::of(&root.post_id));
                self.live_cascades -= 1;
            }
            let node = self.nodes.pop_front().expect("checked");
            let hash = id_hash(&node.post_id);
            if self.by_id_hash.get(&hash) == Some(&self.base_key) {
                self.by_id_hash.remove(&hash);
            } else {
                self.colliding_ids.remove(&node.post_id);
            }
            self.base_key += 1;
            evicted += 1;
        }
        if evicted > 0 {
            let base = self.base_key;
            let cascade_keys = &mut self.cascade_keys;
            let live_cascades = &mut self.live_cascades;
            self.cascades.retain(|_, cascade| {
                // A cascade lives while it has a recent post or a node still in the window (one
                // older than the cutoff that waits behind a newer one). An absorbed cascade has no
                // members, and its last post is no later than its survivor's: it goes first.
                cascade.members.retain(|&member| member >= base);
                let keep = cascade.last_seen_ms >= cutoff_ms || !cascade.members.is_empty();
                if !keep {
                    cascade_keys.remove(&cascade.id);
                    *live_cascades -= usize::from(cascade.merged_into.is_none());
                }
                keep
            });
        }
        evicted
    }
}

/// The hash a post id is found by. Unit tests take its low 4 bits only, so that ids collide
/// in every test of the graph and the detector and the colliding ids' map is exercised.
fn id_hash(post_id: &str) -> u64 {
    let hash = xxh3_64(post_id.as_bytes());
    if cfg!(test) { hash & 0xF } else { hash }
}

/// A cascade's id: a hash of its root post id, so the same stream gives the same ids on every run.
pub fn cascade_id_for(root_post_id: &str) -> String {
    CascadeId::of(root_post_id).to_string()
}

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cascade_id_prints_as_before_and_reads_back() {
        let id = CascadeId::of("x:1");
        assert_eq!(id.to_string(), format!("c{:016x}", xxh3_64(b"x:1")), "the printed form rows and alerts carry");
        assert_eq!(cascade_id_for("x:1"), id.to_string());
        assert_eq!(CascadeId::parse(&id.to_string()), Some(id));
        let printed = id.to_string();
        for other in [&printed[1..], &printed.to_uppercase(), &format!("{printed}0"), &printed.replace('c', "d"), "c"] {
            assert_eq!(CascadeId::parse(other), None, "{other} is no cascade's printed id");
        }
    }

    #[test]
    fn a_cascade_is_found_by_its_printed_id_and_by_the_ids_it_absorbed() {
        let mut graph = CascadeGraph::default();
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let facts = |post_id| NodeFacts {
            post_id,
            platform: "x",
            author_handle: "a",
            text: "text",
            created_at: at,
            automated_account: false,
            account_created_at: None,
            parent_evidence: "",
        };
        let first = graph.add_post(facts("x:1"), None, Vec::new());
        let second = graph.add_post(facts("x:2"), None, Vec::new());
        let bridge = Bridge { other: second.key, kind: EdgeKind::NearDuplicate, other_is_later: false };
        let third = graph.add_post(facts("x:3"), Some((first.key, EdgeKind::NearDuplicate)), vec![bridge]);
        assert_eq!(third.cascade_id, cascade_id_for("x:1"));
        assert_eq!(third.merges[0].absorbed_cascade_id, cascade_id_for("x:2"));
        for id in [cascade_id_for("x:1"), cascade_id_for("x:2")] {
            let view = graph.cascade_view(&id).expect("a live or absorbed id");
            assert_eq!(view.cascade.cascade_id, cascade_id_for("x:1"));
            assert_eq!(view.nodes.len(), 3);
        }
        assert!(graph.cascade_view(&cascade_id_for("x:2").to_uppercase()).is_none());
        assert_eq!(graph.top_cascades(1)[0].size, 3);
    }

    #[test]
    fn a_cascade_of_one_post_is_derived_from_it_until_it_changes() {
        let mut graph = CascadeGraph::default();
        let minute = |m: i64| DateTime::from_timestamp(1_700_000_000 + m * 60, 0).unwrap();
        let facts = |post_id, m| NodeFacts {
            post_id,
            platform: "x",
            author_handle: "a",
            text: "text",
            created_at: minute(m),
            automated_account: false,
            account_created_at: None,
            parent_evidence: "",
        };
        let lone = graph.add_post(facts("x:1", 0), None, Vec::new());
        graph.add_post(facts("x:2", 1), None, Vec::new());
        assert!(graph.cascades.is_empty(), "two cascades of one post, neither held");
        let record = graph.cascade_record_of(lone.key).unwrap();
        assert_eq!(
            (record.cascade_id.as_str(), record.size, record.platforms.as_slice()),
            (lone.cascade_id.as_str(), 1, ["x".to_owned()].as_slice())
        );
        assert_eq!(graph.top_cascades(5).len(), 2);
        assert_eq!(graph.cascade_view(&lone.cascade_id).unwrap().nodes.len(), 1);
        // A reply makes x:2's cascade two posts: held from then on.
        let parent = graph.key_of("x:2").unwrap();
        graph.add_post(facts("x:3", 2), Some((parent, EdgeKind::Reply)), Vec::new());
        assert_eq!(graph.cascades.len(), 1);
        assert_eq!(graph.top_cascades(1)[0].size, 2);
        // A placeholder's post arriving later than a reference to it: its cascade keeps the
        // placeholder's time as its first.
        let placeholder = graph.node_or_placeholder("x:9", minute(3));
        graph.add_post(facts("x:9", 5), None, Vec::new());
        let record = graph.cascade_record_of(placeholder).unwrap();
        assert_eq!((record.size, record.first_seen, record.last_seen), (1, minute(3), minute(5)));
        assert_eq!(graph.cascade_count(), 3);
        // Evicted with its post, as a held one is once its last post is.
        graph.evict_before(minute(1).timestamp_millis());
        assert_eq!(graph.cascade_count(), 2);
        assert!(graph.cascade_view(&lone.cascade_id).is_none(), "its id no longer resolves");
    }
}
