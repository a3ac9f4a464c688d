//! One order for posts read from several partitions, whatever order the partitions' messages
//! arrive in.
//!
//! Linking depends on the order posts are processed in: a parent must come before its child, and
//! the indexes keep their newest entries. Each Kafka partition keeps its own order, but a process
//! reading several receives them interleaved as fetches happen to arrive, which no other process
//! or run reproduces. An [`OrderBuffer`] merges the partitions (*sources*) instead: each source's
//! posts in its own order, and across sources the post with the smallest `(time, post id)` at the
//! head of its source first. The result depends only on what each partition holds, not on when
//! it arrived; where every partition is in time order, it is time order, the order `replay`
//! processes a sorted file in.
//!
//! - A head is released only once every other source has a post waiting (no smaller one can come
//!   from it before its own head) or was read to its end late enough.
//! - A source read to its end is *idle* from the time it was found so. Until it delivers again, it
//!   holds back nothing older than that time less `idle_delay`: the bet that a post reaches its
//!   partition within that delay of its `created_at`, as live traffic does. A source that has said
//!   nothing yet holds everything back.
//! - A source that stalls (its reader gone, its leader down) would hold the others forever. So
//!   once a post has waited `max_wait`, or more than `capacity` posts are held, the smallest head
//!   is released although a source holds it back, **forced**: a stall delays the others by at most
//!   `max_wait` and never exhausts memory.
//! - A post released after a later one (a partition out of time order, a forced release, a copy
//!   of a post sent again after a crash) is marked **late**: the caller, which knows whether it
//!   is a copy, counts it.
//!
//! A release looks at every source's head, which costs the number of sources (partitions, a few
//! dozen) per post; a heap would save nothing at that size.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A post waiting in its source: its time, its id, when it arrived, and what is held.
type Waiting<T> = (DateTime<Utc>, String, Instant, T);

/// What one source has delivered and not released, and whether it was found read to its end.
#[derive(Debug)]
struct Source<T> {
    waiting: VecDeque<Waiting<T>>,
    /// When the source was last found read to its end, if nothing was delivered since.
    idle_at: Option<DateTime<Utc>>,
}

impl<T> Default for Source<T> {
    fn default() -> Self {
        Source { waiting: VecDeque::new(), idle_at: None }
    }
}

/// Posts from several sources, held and released in one order. `S` names a source (an input
/// partition), `T` is what is held.
#[derive(Debug)]
pub struct OrderBuffer<S: Ord + Clone, T> {
    idle_delay: TimeDelta,
    max_wait: Duration,
    capacity: usize,
    sources: BTreeMap<S, Source<T>>,
    held: usize,
    /// The greatest `(time, id)` released so far.
    released: Option<(DateTime<Utc>, String)>,
    forced: u64,
}

/// A post the order let go, and whether a later one went before it.
#[derive(Debug, PartialEq, Eq)]
pub struct Released<T> {
    /// What was held.
    pub item: T,
    /// Whether a post that sorts after it was released before it.
    pub late: bool,
}

impl<S: Ord + Clone, T> OrderBuffer<S, T> {
    /// An empty buffer that trusts an idle source for what is older than `idle_delay` before it
    /// was found idle, lets no post wait longer than `max_wait`, and holds at most `capacity`
    /// posts.
    pub fn new(idle_delay: TimeDelta, max_wait: Duration, capacity: usize) -> OrderBuffer<S, T> {
        OrderBuffer {
            idle_delay,
            max_wait,
            capacity: capacity.max(1),
            sources: BTreeMap::new(),
            held: 0,
            released: None,
            forced: 0,
        }
    }

    /// Waits for `source` from now on, though it has delivered nothing yet: until it delivers or
    /// is found idle, nothing is released.
    pub fn expect(&mut self, source: S) {
        self.sources.entry(source).or_default();
    }

    /// Stops waiting for the sources `gone` says are gone (revoked partitions), and drops what is
    /// held from any source where `held_from` says so; returns what was dropped.
    pub fn forget(&mut self, gone: impl Fn(&S) -> bool, held_from: impl Fn(&T) -> bool) -> Vec<T> {
        let mut dropped = Vec::new();
        for source in self.sources.values_mut() {
            let (out, kept): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut source.waiting).into_iter().partition(|(_, _, _, item)| held_from(item));
            source.waiting = kept;
            dropped.extend(out.into_iter().map(|(_, _, _, item)| item));
        }
        let (gone, kept): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.sources).into_iter().partition(|(source, _)| gone(source));
        self.sources = kept;
        dropped.extend(gone.into_values().flat_map(|source| source.waiting).map(|(_, _, _, item)| item));
        self.held -= dropped.len();
        dropped
    }

    /// Takes a post of `source` that sorts at `(time, id)` and arrived at `arrived`, after what
    /// `source` delivered before.
    pub fn admit(&mut self, source: S, time: DateTime<Utc>, id: &str, item: T, arrived: Instant) {
        let source = self.sources.entry(source).or_default();
        source.idle_at = None;
        source.waiting.push_back((time, id.to_owned(), arrived, item));
        self.held += 1;
    }

    /// Notes that `source` was read to its end at `at`.
    pub fn idle(&mut self, source: S, at: DateTime<Utc>) {
        let source = self.sources.entry(source).or_default();
        source.idle_at = Some(source.idle_at.map_or(at, |idle| idle.max(at)));
    }

    /// The time before which no source can deliver anything more (each source's next post, or
    /// the time it was found idle less the delay); `None` while a source has said nothing, or
    /// there is none.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.sources.values().map(|source| self.reach(source)).min().flatten()
    }

    /// How far `source` is known: its next post's time, or the time it was found idle less the
    /// delay.
    fn reach(&self, source: &Source<T>) -> Option<DateTime<Utc>> {
        match source.waiting.front() {
            Some((time, _, _, _)) => Some(*time),
            None => source.idle_at.map(|at| at - self.idle_delay),
        }
    }

    /// The sources with nothing waiting that hold the order back the furthest: the silent ones
    /// where there are any, else the idle ones found idle the earliest. What an operator looks at
    /// when posts wait.
    pub fn holding_back(&self) -> Vec<S> {
        let empty: Vec<(&S, Option<DateTime<Utc>>)> = self
            .sources
            .iter()
            .filter(|(_, source)| source.waiting.is_empty())
            .map(|(name, source)| (name, self.reach(source)))
            .collect();
        let lowest = empty.iter().map(|(_, reach)| *reach).min().flatten();
        empty.into_iter().filter(|(_, reach)| *reach == lowest || reach.is_none()).map(|(s, _)| s.clone()).collect()
    }

    /// Releases, in order, every post no source can come before; then, while a post has waited
    /// `max_wait` (by `now`) or more than the capacity are held, the next one whatever holds it
    /// back.
    pub fn release(&mut self, now: Instant) -> Vec<Released<T>> {
        let mut released = Vec::new();
        loop {
            let heads =
                self.sources.iter().filter_map(|(name, source)| source.waiting.front().map(|head| (name, head)));
            let Some(((time, _), name, longest_wait)) = heads.fold(None, |best, (name, (time, id, arrived, _))| {
                let wait = now.saturating_duration_since(*arrived);
                match best {
                    Some((key, best_name, longest)) if key <= (*time, id) => Some((key, best_name, wait.max(longest))),
                    Some((_, _, longest)) => Some(((*time, id), name, wait.max(longest))),
                    None => Some(((*time, id), name, wait)),
                }
            }) else {
                break;
            };
            let held_back = self.sources.iter().any(|(other, source)| {
                other != name && source.waiting.is_empty() && self.reach(source).is_none_or(|reach| reach < time)
            });
            if held_back {
                if self.held <= self.capacity && longest_wait < self.max_wait {
                    break;
                }
                self.forced += 1;
            }
            let name = name.clone();
            let (time, id, _, item) =
                self.sources.get_mut(&name).and_then(|source| source.waiting.pop_front()).expect("a head");
            self.held -= 1;
            let key = (time, id);
            let late = self.released.as_ref().is_some_and(|latest| key < *latest);
            if !late {
                self.released = Some(key);
            }
            released.push(Released { item, late });
        }
        released
    }

    /// How many posts of `source` wait.
    pub fn waiting(&self, source: &S) -> usize {
        self.sources.get(source).map_or(0, |source| source.waiting.len())
    }

    /// How many posts are held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// How many posts were released before a source had gone past them, because one had waited
    /// too long or too many were held.
    pub fn forced(&self) -> u64 {
        self.forced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that no test waits it out, unless it says so.
    const WAIT: Duration = Duration::from_secs(3600);

    /// When every post of a test arrives.
    fn start() -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now)
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + second, 0).expect("valid time")
    }

    /// What was released, in order.
    fn items<T>(released: Vec<Released<T>>) -> Vec<T> {
        released.into_iter().map(|released| released.item).collect()
    }

    /// `items` released in order, none late.
    fn on_time<T>(items: Vec<T>) -> Vec<Released<T>> {
        items.into_iter().map(|item| Released { item, late: false }).collect()
    }

    fn buffer(delay: i64) -> OrderBuffer<u8, &'static str> {
        OrderBuffer::new(TimeDelta::seconds(delay), WAIT, 100)
    }

    #[test]
    fn sources_are_merged_by_time_then_id_once_each_has_a_post_waiting() {
        let mut order = buffer(0);
        order.expect(0);
        order.expect(1);
        order.admit(0, at(5), "b", "0:b@5", start());
        order.admit(0, at(9), "d", "0:d@9", start());
        assert!(order.release(start()).is_empty(), "source 1 has said nothing");
        order.admit(1, at(5), "a", "1:a@5", start());
        assert_eq!(
            order.release(start()),
            on_time(vec!["1:a@5"]),
            "by id at equal times; then source 1 may send (5, \"aa\")"
        );
        order.admit(1, at(12), "e", "1:e@12", start());
        assert_eq!(order.release(start()), on_time(vec!["0:b@5", "0:d@9"]));
        order.idle(0, at(20));
        assert_eq!(
            order.release(start()),
            on_time(vec!["1:e@12"]),
            "an idle source holds nothing back before its time"
        );
        assert!(order.is_empty());
    }

    #[test]
    fn whatever_the_arrival_order_the_release_order_is_the_same() {
        let partitions: [&[(i64, &str)]; 3] =
            [&[(1, "a"), (4, "d"), (9, "i")], &[(2, "b"), (3, "c"), (8, "h")], &[(5, "e"), (6, "f"), (7, "g")]];
        let expected: Vec<&str> = "abcdefghi".split("").filter(|id| !id.is_empty()).collect();
        // Every interleaving that keeps each partition's order: here, a few by rotation.
        for rotation in 0..3 {
            let mut order: OrderBuffer<usize, &str> = OrderBuffer::new(TimeDelta::zero(), WAIT, 100);
            (0..3).for_each(|partition| order.expect(partition));
            let mut released = Vec::new();
            for arrival in 0..9 {
                let (step, offset) = (arrival / 3, arrival % 3);
                let partition = (offset + rotation + step) % 3;
                let (second, id) = partitions[partition][step];
                order.admit(partition, at(second), id, id, start());
                released.extend(items(order.release(start())));
            }
            for partition in 0..3 {
                order.idle(partition, at(100));
            }
            released.extend(items(order.release(start())));
            assert_eq!(released, expected, "rotation {rotation}");
        }
    }

    #[test]
    fn an_idle_source_holds_back_what_is_within_the_delay_of_when_it_was_found_idle() {
        let mut order = buffer(3);
        order.admit(0, at(10), "a", "a", start());
        order.idle(1, at(12));
        assert!(order.release(start()).is_empty(), "source 1 may still deliver something from 9 s on");
        order.idle(1, at(13));
        assert_eq!(order.watermark(), Some(at(10)));
        assert_eq!(items(order.release(start())), vec!["a"]);
    }

    #[test]
    fn a_partition_out_of_time_order_keeps_its_order_and_is_marked_late() {
        let mut order = buffer(0);
        order.admit(0, at(10), "b", "b", start());
        order.admit(0, at(8), "a", "a", start());
        order.idle(0, at(10));
        assert_eq!(
            order.release(start()),
            vec![Released { item: "b", late: false }, Released { item: "a", late: true }]
        );
    }

    #[test]
    fn a_source_that_delivers_again_is_no_longer_idle() {
        let mut order = buffer(0);
        order.admit(0, at(10), "a", "a", start());
        order.idle(1, at(100));
        assert_eq!(items(order.release(start())), vec!["a"]);
        order.admit(1, at(20), "b", "b", start());
        order.admit(0, at(30), "c", "c", start());
        assert_eq!(items(order.release(start())), vec!["b"], "source 1 is empty and no longer idle");
    }

    #[test]
    fn forgotten_sources_stop_holding_back_and_lose_what_they_held() {
        let mut order: OrderBuffer<u8, (u8, &str)> = OrderBuffer::new(TimeDelta::zero(), WAIT, 100);
        order.expect(2);
        order.admit(0, at(5), "a", (0, "a"), start());
        order.admit(1, at(6), "b", (1, "b"), start());
        assert!(order.release(start()).is_empty());
        assert_eq!(order.holding_back(), vec![2]);
        assert_eq!(order.forget(|source| *source != 0, |item| item.0 != 0), vec![(1, "b")]);
        assert_eq!(order.len(), 1);
        assert_eq!(items(order.release(start())), vec![(0, "a")]);
    }

    #[test]
    fn beyond_its_capacity_the_next_post_is_released_and_counted() {
        let mut order: OrderBuffer<u8, i64> = OrderBuffer::new(TimeDelta::zero(), WAIT, 2);
        order.expect(1);
        for second in [1, 2, 3] {
            order.admit(0, at(second), &second.to_string(), second, start());
        }
        assert_eq!(items(order.release(start())), vec![1], "three held, two allowed");
        assert_eq!((order.len(), order.forced()), (2, 1));
        order.admit(1, at(0), "0", 0, start());
        assert_eq!(
            order.release(start()),
            vec![Released { item: 0, late: true }],
            "source 1's post came after a later one was forced out"
        );
    }

    #[test]
    fn copies_of_one_post_are_both_released_and_not_late() {
        let mut order = buffer(0);
        order.admit(0, at(4), "a", "first", start());
        order.admit(0, at(4), "a", "second", start());
        assert_eq!(
            order.release(start()),
            vec![Released { item: "first", late: false }, Released { item: "second", late: false }]
        );
    }

    #[test]
    fn a_post_that_waited_too_long_goes_ahead_of_a_silent_source() {
        let mut order: OrderBuffer<u8, &str> = OrderBuffer::new(TimeDelta::zero(), Duration::from_secs(10), 100);
        order.expect(1);
        order.admit(0, at(1), "a", "a", start());
        order.admit(0, at(2), "b", "b", start() + Duration::from_secs(5));
        assert!(order.release(start() + Duration::from_secs(9)).is_empty());
        assert_eq!(items(order.release(start() + Duration::from_secs(10))), vec!["a"], "a waited 10 s");
        assert_eq!(items(order.release(start() + Duration::from_secs(15))), vec!["b"]);
        assert_eq!(order.forced(), 2);
    }
}
