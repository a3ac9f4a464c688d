//! One order across input partitions, in every detecting process (`whole` and `detect`).
//!
//! A process reading several partitions receives their messages interleaved as fetches happen to
//! arrive. Linked in that order, the result would depend on timing. [`PartitionOrder`] holds each
//! post in an [`OrderBuffer`] and hands posts to the pipeline merged across input partitions by
//! time and post id, each partition in its own order ([`echotrace_core::order`]): the same for
//! any timing, and where the partitions are in time order, the order `echotrace replay` processes
//! the sorted file of the same posts in. A process reading one partition links in its order, at
//! once, as before.
//!
//! - **Sources** are *input* partitions. In `whole` they are the partitions the process owns. In
//!   `detect` every prepared post names its input partition, several may share a prepared
//!   partition, and the stage waits for every input partition whose prepared partition it owns
//!   (read from the brokers at start-up), even one that has said nothing yet.
//! - **Idle partitions.** A partition read to its end holds back nothing older than the time it
//!   was found so less `stage.max_arrival_delay_ms`. In `whole` the loop asks the brokers every
//!   [`IDLE_REFRESH`] while posts wait ([`super::lag::PartitionEnds::read_to_end`]: the offset
//!   read next is the end they report). In `detect` the `prepare` stage says so with idle markers,
//!   asked of the brokers the same way. A mark is a fact about its time, so it never has to be
//!   taken back: a post appended later reached its partition after that time.
//! - **A post's time** is its `created_at`, or its arrival time (the message's timestamp) plus
//!   `stage.max_arrival_delay_ms` where it is dated further ahead: a post dated ahead of the clock
//!   would otherwise wait, and hold back every partition, until the clock caught up with it, since
//!   an idle partition vouches only for what is older than the clock less the delay.
//! - **Backpressure.** A consumed partition with more than its share of `stage.max_held_posts`
//!   waiting (half the bound over the partitions owned) is paused, and resumed once half of those
//!   have gone (or one of its input partitions has nothing waiting any more), as Kafka Streams
//!   pauses a partition whose buffer is full: a partition far ahead of the others waits in Kafka,
//!   not in memory. One that carries an input partition with nothing waiting is never paused,
//!   since the order may be waiting for it. A post that waited `stage.max_order_wait_ms` goes
//!   ahead of a partition that says nothing, so a stall never stops the others for good.
//! - **Offsets.** A held post is not processed yet: the checkpoint commits, and the snapshot
//!   records, each consumed partition's smallest held offset, so a restart reads the held posts
//!   again ([`PartitionOrder::first_held`]).

use super::lag::{Partition, ReadToEnd};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::sinks::kafka::KafkaPublisher;
use crate::stages::Input;
use chrono::{DateTime, TimeDelta, Utc};
use echotrace_core::order::{OrderBuffer, Released};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the consumer loop, while posts wait, asks which partitions are read to their end
/// (`whole`) and releases what waited long enough.
pub const IDLE_REFRESH: Duration = Duration::from_millis(250);

/// Which input partitions each consumed partition carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputLayout {
    /// `whole`: the consumed partitions are the input partitions.
    Input,
    /// `detect`: input partition `p` is sent on partition `p % partitions` of the prepared topic.
    Prepared {
        /// The prepared topic.
        topic: String,
        /// Its number of partitions.
        partitions: i32,
        /// Every input topic and its number of partitions.
        inputs: Vec<(String, i32)>,
    },
}

impl InputLayout {
    /// The `detect` stage's layout of `config`'s topics, as the brokers have them.
    pub fn fetch_prepared(
        config: &Config,
        publisher: &KafkaPublisher,
        timeout: Duration,
    ) -> anyhow::Result<InputLayout> {
        let partitions = publisher.partitions(&config.kafka.prepared_topic, timeout)?;
        let inputs = config
            .kafka
            .input_topics
            .iter()
            .map(|topic| Ok((topic.clone(), publisher.partitions(topic, timeout)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(InputLayout::Prepared { topic: config.kafka.prepared_topic.clone(), partitions, inputs })
    }

    /// The input partitions the consumed partitions in `assigned` carry.
    fn inputs_of(&self, assigned: &BTreeSet<Partition>) -> BTreeSet<Partition> {
        match self {
            InputLayout::Input => assigned.clone(),
            InputLayout::Prepared { topic, partitions, inputs } => inputs
                .iter()
                .flat_map(|(input, count)| (0..*count).map(|partition| (input.clone(), partition)))
                .filter(|(_, partition)| assigned.contains(&(topic.clone(), partition % (*partitions).max(1))))
                .collect(),
        }
    }
}

/// A post waiting for the order, with where it was read.
#[derive(Debug)]
pub struct HeldPost {
    /// The post.
    pub input: Input,
    /// Its message's timestamp.
    pub produced_at: Option<DateTime<Utc>>,
    /// The consumed partition it was read from.
    pub read_from: Partition,
    /// Its offset there.
    pub offset: i64,
}

/// Consumed partitions the consumer loop is to pause or resume.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Too many of their posts wait.
    pub pause: Vec<Partition>,
    /// Paused, and few enough of their posts wait now.
    pub resume: Vec<Partition>,
}

/// The posts waiting for the order, and the offsets that hold.
pub struct PartitionOrder {
    buffer: OrderBuffer<Partition, HeldPost>,
    layout: InputLayout,
    /// The consumed partitions the buffer waits for the input partitions of.
    assigned: BTreeSet<Partition>,
    /// The offsets of the posts held, by consumed partition.
    held_offsets: BTreeMap<Partition, BTreeSet<i64>>,
    /// The input partitions each owned consumed partition carries.
    carried: BTreeMap<Partition, Vec<Partition>>,
    /// The most posts held.
    max_held: usize,
    /// Posts of one consumed partition held before it is paused.
    pause_at: usize,
    /// The consumed partitions paused because too many of their posts wait.
    paused: BTreeSet<Partition>,
    /// Partitions to pause and to resume, for the consumer loop.
    flow: Flow,
    max_arrival_delay: TimeDelta,
    metrics: Arc<Metrics>,
    /// The buffer's forced releases already added to the metrics.
    counted_forced: u64,
}

impl PartitionOrder {
    /// An empty order for `layout`'s input partitions, with `config`'s delay and bounds.
    pub fn new(layout: InputLayout, config: &Config, metrics: Arc<Metrics>) -> PartitionOrder {
        PartitionOrder {
            buffer: OrderBuffer::new(
                config.stage.max_arrival_delay(),
                Duration::from_millis(config.stage.max_order_wait_ms),
                config.stage.max_held_posts,
            ),
            layout,
            assigned: BTreeSet::new(),
            held_offsets: BTreeMap::new(),
            carried: BTreeMap::new(),
            max_held: config.stage.max_held_posts.max(1),
            pause_at: config.stage.max_held_posts.max(1),
            paused: BTreeSet::new(),
            flow: Flow::default(),
            max_arrival_delay: config.stage.max_arrival_delay(),
            metrics,
            counted_forced: 0,
        }
    }

    /// Follows the group's assignment: waits for the input partitions of new partitions, and
    /// stops waiting for those of partitions gone, dropping what they held (their next owner
    /// reads it again from the commit). Returns whether the assignment changed.
    pub fn follow(&mut self, assigned: &BTreeSet<Partition>) -> bool {
        if *assigned == self.assigned {
            return false;
        }
        let inputs = self.layout.inputs_of(assigned);
        let dropped = self.buffer.forget(|input| !inputs.contains(input), |held| !assigned.contains(&held.read_from));
        for held in &dropped {
            self.unhold(held);
        }
        self.carried = assigned
            .iter()
            .map(|consumed| {
                (consumed.clone(), self.layout.inputs_of(&BTreeSet::from([consumed.clone()])).into_iter().collect())
            })
            .collect();
        self.paused.retain(|consumed| assigned.contains(consumed));
        self.pause_at = (self.max_held / (2 * assigned.len().max(1))).max(1);
        for input in inputs {
            self.buffer.expect(input);
        }
        self.assigned = assigned.clone();
        if let InputLayout::Prepared { topic, partitions, .. } = &self.layout
            && !assigned.is_empty()
            && assigned.len() < *partitions as usize
        {
            // Another `detect` process owns the rest: posts on different prepared partitions
            // are never linked to each other, and both write rows for the same cascades.
            tracing::error!(
                topic = %topic,
                owned = assigned.len(),
                partitions,
                "this detect process owns only part of the prepared topic: run one detect process, \
                 or give the prepared topic one partition so that the others stand by (docs/scaling.md)"
            );
        }
        self.metrics.posts_held.set(self.buffer.len() as i64);
        tracing::debug!(partitions = ?self.assigned, dropped = dropped.len(), "ordering follows the assignment");
        true
    }

    /// Before `revoked` partitions are given up: drops what they hold at once (their next owner,
    /// perhaps this member again, reads it from the commit), and returns those the order had
    /// paused, which the consumer resumes: a pause outlives a revocation in librdkafka, and the
    /// partition would come back paused.
    pub fn revoke(&mut self, revoked: &[Partition]) -> Vec<Partition> {
        let remaining: BTreeSet<Partition> =
            self.assigned.iter().filter(|partition| !revoked.contains(partition)).cloned().collect();
        let paused: Vec<Partition> =
            revoked.iter().filter(|partition| self.paused.contains(*partition)).cloned().collect();
        self.follow(&remaining);
        self.metrics.partitions_paused.set(self.paused.len() as i64);
        paused
    }

    /// Takes a post read from input partition `source` (in `whole`, the partition it was read
    /// from; in `detect`, `None` for a prepared message of a version without it, processed at once
    /// and counted out of order); returns it when it is to be processed now.
    pub fn admit(&mut self, source: Option<Partition>, held: HeldPost) -> Option<HeldPost> {
        // A message of a partition no longer owned, read before the rebalance took it: as
        // before there was an order, it goes on at once, and its next owner reads it again.
        if !self.assigned.contains(&held.read_from) {
            return Some(held);
        }
        let source = match self.layout {
            InputLayout::Input => Some(held.read_from.clone()),
            InputLayout::Prepared { .. } => source,
        };
        // A version 1 message, or an input partition the layout read at start-up does not place
        // here (partitions added since, a preparer that counts the prepared topic's partitions
        // otherwise): processed at once, never waited for.
        let Some(source) = source.filter(|source| self.carries(&held.read_from, source)) else {
            self.metrics.posts_out_of_order.inc();
            return Some(held);
        };
        let post = held.input.post();
        let time = match held.produced_at {
            Some(arrival) => post.created_at.min(arrival + self.max_arrival_delay),
            None => post.created_at,
        };
        let id = post.id.clone();
        let read_from = held.read_from.clone();
        let offsets = self.held_offsets.entry(read_from.clone()).or_default();
        offsets.insert(held.offset);
        let held_there = offsets.len();
        self.buffer.admit(source, time, &id, held, Instant::now());
        if held_there >= self.pause_at && !self.paused.contains(&read_from) && self.all_waiting(&read_from) {
            self.paused.insert(read_from.clone());
            self.flow.pause.push(read_from);
            self.metrics.partitions_paused.set(self.paused.len() as i64);
        }
        None
    }

    /// Whether owned partition `consumed` carries input partition `input`.
    fn carries(&self, consumed: &Partition, input: &Partition) -> bool {
        self.carried.get(consumed).is_some_and(|inputs| inputs.contains(input))
    }

    /// Whether every input partition `consumed` carries has posts waiting: pausing it then
    /// cannot starve the order.
    fn all_waiting(&self, consumed: &Partition) -> bool {
        self.carried.get(consumed).is_some_and(|inputs| inputs.iter().all(|input| self.buffer.waiting(input) > 0))
    }

    /// The partitions to pause and to resume since the last call.
    pub fn take_flow(&mut self) -> Flow {
        std::mem::take(&mut self.flow)
    }

    /// Whether `consumed` is paused because too many of its posts wait.
    pub fn holds_paused(&self, consumed: &Partition) -> bool {
        self.paused.contains(consumed)
    }

    /// Notes an idle marker read from `read_from`: input partition `source` was read to its end
    /// at `at`. A marker of a partition no longer owned, or of an input it does not carry, says
    /// nothing about what this member waits for.
    pub fn idle(&mut self, source: Partition, at: DateTime<Utc>, read_from: &Partition) {
        if self.carries(read_from, &source) {
            self.buffer.idle(source, at);
        }
    }

    /// Whether the consumed partitions are the input partitions (`whole`): the consumer itself
    /// finds which are read to their end ([`super::lag::PartitionEnds::read_to_end`]).
    pub fn reads_input(&self) -> bool {
        self.layout == InputLayout::Input
    }

    /// `whole`: notes the owned input partitions the brokers said were read to their end, as
    /// idle from when they were asked.
    pub fn read_to_end(&mut self, read_to_end: &ReadToEnd) {
        if self.layout != InputLayout::Input {
            return;
        }
        for partition in read_to_end.partitions.iter().filter(|partition| self.assigned.contains(*partition)) {
            self.buffer.idle(partition.clone(), read_to_end.at);
        }
    }

    /// Whether posts wait for the order.
    pub fn holds_posts(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// The posts the order has reached, in order. One released after a later one is counted out
    /// of order, unless `taken` says a post with its id was taken before: a copy sent again after
    /// a crash, a failed commit or a rebalance, which the detector drops.
    pub fn release(&mut self, taken: impl Fn(&str) -> bool) -> Vec<HeldPost> {
        let released: Vec<HeldPost> = self
            .buffer
            .release(Instant::now())
            .into_iter()
            .map(|Released { item, late }| {
                if late && !taken(&item.input.post().id) {
                    self.metrics.posts_out_of_order.inc();
                }
                item
            })
            .collect();
        for held in &released {
            self.unhold(held);
        }
        let resumed: Vec<Partition> = self
            .paused
            .iter()
            .filter(|consumed| {
                let held = self.held_offsets.get(*consumed).map_or(0, BTreeSet::len);
                held <= self.pause_at / 2 || !self.all_waiting(consumed)
            })
            .cloned()
            .collect();
        for consumed in resumed {
            self.paused.remove(&consumed);
            self.flow.resume.push(consumed);
        }
        self.metrics.partitions_paused.set(self.paused.len() as i64);
        let forced = self.buffer.forced();
        if forced > self.counted_forced {
            self.metrics.order_forced.inc_by(forced - self.counted_forced);
            tracing::warn!(
                forced = forced - self.counted_forced,
                waiting_for = ?self.buffer.holding_back(),
                "posts processed before the order reached them: one waited stage.max_order_wait_ms, or stage.max_held_posts were held"
            );
        }
        self.counted_forced = forced;
        if let Some(watermark) = self.buffer.watermark() {
            self.metrics.order_watermark.set(watermark.timestamp_millis() as f64 / 1000.0);
        }
        self.metrics.posts_held.set(self.buffer.len() as i64);
        released
    }

    /// The smallest offset of consumed partition `partition` held, not processed yet.
    pub fn first_held(&self, partition: &Partition) -> Option<i64> {
        self.held_offsets.get(partition).and_then(|offsets| offsets.first().copied())
    }

    fn unhold(&mut self, held: &HeldPost) {
        if let Some(offsets) = self.held_offsets.get_mut(&held.read_from) {
            offsets.remove(&held.offset);
            if offsets.is_empty() {
                self.held_offsets.remove(&held.read_from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echotrace_core::post::Post;

    fn prepared() -> InputLayout {
        InputLayout::Prepared { topic: "prepared".into(), partitions: 2, inputs: vec![("posts".into(), 3)] }
    }

    fn partition(topic: &str, number: i32) -> Partition {
        (topic.to_owned(), number)
    }

    fn held(id: &str, second: u32, read_from: (&str, i32), offset: i64) -> HeldPost {
        let json = format!(
            r#"{{"id":"{id}","platform":"x","author":{{"id":"a","handle":"a"}},"created_at":"2026-11-01T09:00:{second:02}Z","text":"t"}}"#
        );
        HeldPost {
            input: Input::Post(Post::from_json(json.as_bytes()).expect("valid post")),
            produced_at: None,
            read_from: partition(read_from.0, read_from.1),
            offset,
        }
    }

    fn ids(released: Vec<HeldPost>) -> Vec<String> {
        released.into_iter().map(|held| held.input.post().id.clone()).collect()
    }

    /// No post was processed before.
    fn none(_: &str) -> bool {
        false
    }

    fn at(second: u32) -> DateTime<Utc> {
        format!("2026-11-01T09:01:{second:02}Z").parse().unwrap()
    }

    #[test]
    fn input_partitions_are_waited_for_by_the_partition_that_carries_them() {
        let inputs = prepared().inputs_of(&BTreeSet::from([partition("prepared", 0)]));
        assert_eq!(inputs, BTreeSet::from([partition("posts", 0), partition("posts", 2)]));
        let owned = BTreeSet::from([partition("posts", 1)]);
        assert_eq!(InputLayout::Input.inputs_of(&owned), owned);
    }

    #[test]
    fn held_posts_hold_their_offsets_back_until_released() {
        let mut order = PartitionOrder::new(prepared(), &Config::default(), Arc::new(Metrics::new()));
        order.follow(&BTreeSet::from([partition("prepared", 0), partition("prepared", 1)]));
        assert!(order.admit(Some(partition("posts", 0)), held("x:2", 30, ("prepared", 0), 7)).is_none());
        assert!(order.admit(Some(partition("posts", 2)), held("x:1", 10, ("prepared", 0), 8)).is_none());
        assert!(order.release(none).is_empty(), "posts/1 has said nothing");
        assert_eq!(order.first_held(&partition("prepared", 0)), Some(7));
        order.admit(Some(partition("posts", 1)), held("x:3", 40, ("prepared", 1), 3));
        assert_eq!(ids(order.release(none)), ["x:1"], "then posts/2 has nothing waiting");
        assert_eq!(order.first_held(&partition("prepared", 0)), Some(7));
        order.idle(partition("posts", 2), at(0), &partition("prepared", 0));
        assert_eq!(ids(order.release(none)), ["x:2"], "then posts/0 has nothing waiting");
        assert_eq!(order.first_held(&partition("prepared", 0)), None);
        assert_eq!(order.first_held(&partition("prepared", 1)), Some(3));
        order.idle(partition("posts", 0), at(0), &partition("prepared", 0));
        assert_eq!(ids(order.release(none)), ["x:3"]);
        assert!(order.admit(None, held("x:9", 59, ("prepared", 1), 4)).is_some(), "a version 1 message");
    }

    #[test]
    fn a_revoked_partition_drops_its_held_posts_and_stops_holding_the_others() {
        let mut order = PartitionOrder::new(prepared(), &Config::default(), Arc::new(Metrics::new()));
        order.follow(&BTreeSet::from([partition("prepared", 0), partition("prepared", 1)]));
        order.admit(Some(partition("posts", 0)), held("x:1", 30, ("prepared", 0), 1));
        order.admit(Some(partition("posts", 1)), held("x:2", 20, ("prepared", 1), 1));
        order.idle(partition("posts", 2), at(0), &partition("prepared", 0));
        assert_eq!(ids(order.release(none)), ["x:2"], "then posts/1 holds x:1 back");
        order.admit(Some(partition("posts", 1)), held("x:4", 50, ("prepared", 1), 2));
        assert!(order.revoke(&[partition("prepared", 1)]).is_empty(), "nothing paused");
        assert_eq!(order.first_held(&partition("prepared", 1)), None);
        assert_eq!(ids(order.release(none)), ["x:1"]);
        let unknown = held("x:5", 59, ("prepared", 0), 3);
        assert!(order.admit(Some(partition("posts", 7)), unknown).is_some(), "an input partition not placed here");
    }

    #[test]
    fn in_whole_a_partition_read_to_its_end_stops_holding_the_others_back() {
        let mut order = PartitionOrder::new(InputLayout::Input, &Config::default(), Arc::new(Metrics::new()));
        order.follow(&BTreeSet::from([partition("posts", 0), partition("posts", 1)]));
        order.admit(Some(partition("posts", 0)), held("x:1", 10, ("posts", 0), 5));
        assert!(order.release(none).is_empty());
        let read_to_end = |partitions: &[i32]| ReadToEnd {
            at: at(0),
            partitions: partitions.iter().map(|number| partition("posts", *number)).collect(),
        };
        order.read_to_end(&read_to_end(&[0, 7]));
        assert!(order.release(none).is_empty(), "posts/1 is not read to its end; posts/7 is not owned");
        order.read_to_end(&read_to_end(&[1]));
        assert!(order.holds_posts());
        assert_eq!(ids(order.release(none)), ["x:1"], "x:1 is older than posts/1's mark less the delay");
        order.admit(Some(partition("posts", 1)), held("x:2", 20, ("posts", 1), 0));
        order.admit(Some(partition("posts", 1)), held("x:3", 59, ("posts", 1), 1));
        assert_eq!(ids(order.release(none)), ["x:2"], "posts/0 was read to its end at 09:01:00, less 2 s");
    }

    #[test]
    fn a_partition_far_ahead_is_paused_and_resumed_once_the_others_catch_up() {
        let stage = crate::config::StageConfig { max_held_posts: 12, ..Default::default() };
        let config = Config { stage, ..Config::default() };
        let mut order = PartitionOrder::new(InputLayout::Input, &config, Arc::new(Metrics::new()));
        order.follow(&BTreeSet::from([partition("posts", 0), partition("posts", 1)]));
        for second in 0..2 {
            order.admit(
                Some(partition("posts", 0)),
                held(&format!("x:{second}"), 10 + second, ("posts", 0), second.into()),
            );
        }
        assert!(order.release(none).is_empty(), "posts/1 has said nothing");
        assert_eq!(order.take_flow(), Flow::default(), "a partition may hold three: half of 12 over two");
        order.admit(Some(partition("posts", 0)), held("x:2", 12, ("posts", 0), 2));
        assert_eq!(order.take_flow().pause, [partition("posts", 0)]);
        order.admit(Some(partition("posts", 1)), held("y:0", 40, ("posts", 1), 0));
        assert_eq!(ids(order.release(none)), ["x:0", "x:1", "x:2"]);
        assert_eq!(order.take_flow(), Flow { pause: vec![], resume: vec![partition("posts", 0)] });
    }

    #[test]
    fn a_post_released_after_a_later_one_is_counted_unless_it_is_a_copy_of_a_processed_one() {
        let metrics = Arc::new(Metrics::new());
        let mut order = PartitionOrder::new(InputLayout::Input, &Config::default(), metrics.clone());
        order.follow(&BTreeSet::from([partition("posts", 0)]));
        // A partition out of time order: x:1 comes after x:2, which is later.
        order.admit(Some(partition("posts", 0)), held("x:2", 20, ("posts", 0), 0));
        order.admit(Some(partition("posts", 0)), held("x:1", 10, ("posts", 0), 1));
        // x:2 again, sent a second time after x:3.
        order.admit(Some(partition("posts", 0)), held("x:3", 30, ("posts", 0), 2));
        order.admit(Some(partition("posts", 0)), held("x:2", 20, ("posts", 0), 3));
        order.read_to_end(&ReadToEnd { at: at(59), partitions: BTreeSet::from([partition("posts", 0)]) });
        let processed = |id: &str| id == "x:2";
        assert_eq!(ids(order.release(processed)), ["x:2", "x:1", "x:3", "x:2"]);
        assert_eq!(metrics.posts_out_of_order.get(), 1, "x:1 is out of order; the copy of x:2 is dropped");
    }
}
