//! The consumer's context: lag from librdkafka's statistics (a gauge per partition), readiness,
//! rebalances, and [`Ownership`], the partitions this member owns, which the consumer loop reads
//! before it commits, and how far its window holds each partition.
//!
//! Also which owned partitions a consumer has read to their end ([`PartitionEnds::read_to_end`],
//! through a client of its own): the idle marks of the order across partitions, in `whole`
//! ([`super::ordering`]) and in the `prepare` stage's idle markers.
//!
//! Before partitions are revoked, the context takes a checkpoint through the loop's shared
//! [`Progress`]. Assigned partitions are paused until the loop has read the group's committed
//! offsets: each one whose committed offset is ahead of what this member's window holds of it
//! (another member read it meanwhile, or this member never did) has its window rebuilt
//! ([`super::rebuild`]) before all are resumed.
//!
//! Readiness holds while the group has assigned this member a partition, every window is in place
//! and a broker connection is up: librdkafka reports every broker down at once as an error, and
//! the broker states in each statistics report (every `statistics.interval.ms`) say when one is
//! back.

use super::checkpoint::Progress;
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A topic and partition.
pub type Partition = (String, i32);

/// How long an assignment waits for the group's committed offsets.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions this member owns, as the group's rebalances say (the consumer loop commits
/// offsets for these alone), and how far it holds the window of each.
#[derive(Debug, Default)]
pub struct Ownership {
    assigned: BTreeSet<Partition>,
    /// For each partition whose posts are in this member's window (restored, rebuilt, or read by
    /// it), the offset it holds them up to; `None`: every partition, nothing is rebuilt.
    held: Option<BTreeMap<Partition, i64>>,
    /// Assigned partitions paused until the consumer loop has checked their window against the
    /// group's committed offsets (and rebuilt it where needed).
    to_check: BTreeSet<Partition>,
    /// Partitions the consumer loop is checking or rebuilding now.
    checking: BTreeSet<Partition>,
}

impl Ownership {
    /// An owner that holds the window of `held` partitions up to the given offsets, and rebuilds
    /// any partition it is assigned whose committed offset is ahead of that; `None`: it never
    /// rebuilds.
    pub fn holding(held: Option<BTreeMap<Partition, i64>>) -> Ownership {
        Ownership { held, ..Ownership::default() }
    }

    /// Whether this member owns `partition` now.
    pub fn owns(&self, partition: &Partition) -> bool {
        self.assigned.contains(partition)
    }

    /// The partitions this member owns now.
    pub fn assigned(&self) -> &BTreeSet<Partition> {
        &self.assigned
    }

    /// Whether `partition` is paused until the consumer loop has checked its window.
    pub fn awaits_check(&self, partition: &Partition) -> bool {
        self.to_check.contains(partition) || self.checking.contains(partition)
    }

    /// Notes that the window holds `partition`'s posts up to `offset`.
    pub fn hold(&mut self, partition: Partition, offset: i64) {
        if let Some(held) = &mut self.held {
            held.insert(partition, offset);
        }
    }

    /// Whether an assigned partition whose group has committed `committed` needs its window
    /// rebuilt: something was committed past what this member holds of it.
    fn needs_rebuild(&self, partition: &Partition, committed: Option<i64>) -> bool {
        match (&self.held, committed) {
            (None, _) | (_, None) => false,
            (Some(held), Some(committed)) => committed > held.get(partition).copied().unwrap_or(0),
        }
    }

    /// Takes the assigned partitions waiting for their check, marking them being checked (not
    /// ready) until [`LagContext::rebuilt`].
    pub fn take_to_check(&mut self) -> BTreeSet<Partition> {
        let taken = std::mem::take(&mut self.to_check);
        self.checking = taken.into_iter().filter(|partition| self.assigned.contains(partition)).collect();
        self.checking.clone()
    }

    /// Which of `partitions` need their window rebuilt, given the group's committed offsets
    /// (`None`: the coordinator did not answer; a partition missing from the map: it gave no
    /// offset for it).
    pub fn needing_rebuild(
        &self,
        partitions: &BTreeSet<Partition>,
        committed: Option<&BTreeMap<Partition, Option<i64>>>,
    ) -> BTreeSet<Partition> {
        partitions
            .iter()
            .filter(|partition| match committed.map(|committed| committed.get(*partition)) {
                Some(Some(offset)) => self.needs_rebuild(partition, *offset),
                // No offset for it: rebuild (the rebuild asks again).
                Some(None) => self.held.is_some(),
                // No answer at all: rebuild what this member never held.
                None => self.held.as_ref().is_some_and(|held| !held.contains_key(*partition)),
            })
            .cloned()
            .collect()
    }
}

/// The consumer's context: receives statistics every `statistics.interval.ms`, errors and
/// rebalances.
pub struct LagContext {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    ownership: Arc<Mutex<Ownership>>,
    brokers_up: AtomicBool,
    /// The consumer loop's progress, for the checkpoint before a revocation.
    progress: OnceLock<Arc<tokio::sync::Mutex<Progress>>>,
    /// Wakes the consumer loop when assigned partitions wait for their check.
    to_check: tokio::sync::Notify,
    /// Whether the rebalance callback is taking its checkpoint before a revocation.
    in_rebalance: AtomicBool,
}

impl LagContext {
    /// A context reporting into `metrics`, into `ready` whether partitions are assigned, and into
    /// `ownership` which.
    pub fn new(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, ownership: Arc<Mutex<Ownership>>) -> LagContext {
        LagContext {
            metrics,
            ready,
            ownership,
            brokers_up: AtomicBool::new(true),
            progress: OnceLock::new(),
            to_check: tokio::sync::Notify::new(),
            in_rebalance: AtomicBool::new(false),
        }
    }

    /// Whether the rebalance callback is taking its checkpoint before a revocation: the consumer
    /// is inside its own poll, and must not be polled again.
    pub fn in_rebalance(&self) -> bool {
        self.in_rebalance.load(Ordering::Relaxed)
    }

    /// Resolves when assigned partitions wait for their check (at once if some came since the
    /// last call).
    pub async fn partitions_to_check(&self) {
        self.to_check.notified().await
    }

    /// The partitions this member owns, shared with the consumer loop.
    pub fn ownership(&self) -> Arc<Mutex<Ownership>> {
        self.ownership.clone()
    }

    /// Gives the context the consumer loop's progress, to checkpoint before revocations.
    pub fn attach(&self, progress: Arc<tokio::sync::Mutex<Progress>>) {
        let _ = self.progress.set(progress);
    }

    /// Ready: partitions assigned, their windows in place, and a broker up.
    fn update_ready(&self, ownership: &Ownership) {
        let ready = !ownership.assigned.is_empty()
            && ownership.to_check.is_empty()
            && ownership.checking.is_empty()
            && self.brokers_up.load(Ordering::Relaxed);
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The consumer loop has rebuilt the windows it took, up to these offsets, and resumed their
    /// partitions.
    pub fn rebuilt(&self, held: &BTreeMap<Partition, i64>) {
        let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
        for (partition, offset) in held {
            ownership.hold(partition.clone(), *offset);
        }
        ownership.checking.clear();
        self.update_ready(&ownership);
    }
}

/// How long asking the brokers which partitions are read to their end may take, all requests
/// together.
pub const READ_TO_END_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a failing question to the brokers is logged; the failures between are counted in
/// the next line.
const ASK_WARNING_INTERVAL: Duration = Duration::from_secs(30);

/// A client of its own, in the group's name but joining nothing, that asks the brokers where
/// partitions end and where the group committed them. Asked through the group consumer, the
/// question waited on each connection behind the consumer's fetch, which the broker holds up to
/// `fetch.wait.max.ms` (500 ms) when a partition has nothing new: each answer took half a second,
/// and the consumer loop that waited for it fell behind.
pub struct PartitionEnds {
    client: BaseConsumer,
    timeout: Duration,
    /// Whether the consumer starts a partition with nothing committed at its end
    /// (`auto.offset.reset = latest`) rather than at its first offset.
    starts_at_end: bool,
    failures: Mutex<Failures>,
}

/// Failed questions since the last warning.
#[derive(Default)]
struct Failures {
    warned: Option<std::time::Instant>,
    unlogged: u64,
}

impl PartitionEnds {
    /// A client of `config`'s brokers, with its security settings, that reads the committed
    /// offsets of `group` (the consumer's) and whose every question takes at most `timeout`, all
    /// its requests together.
    pub fn new(config: &crate::config::Config, group: &str, timeout: Duration) -> KafkaResult<Arc<PartitionEnds>> {
        let mut client = super::client_config(config, &[("group.id", group)]);
        // No statistics, whatever `kafka.properties` says: nothing reads them.
        client.set("statistics.interval.ms", "0");
        let client = client.create().map_err(crate::config::without_secret)?;
        let reset = config.kafka.properties.get("auto.offset.reset").map(String::as_str);
        let starts_at_end = matches!(reset, Some("latest" | "largest" | "end"));
        Ok(Arc::new(PartitionEnds { client, timeout, starts_at_end, failures: Mutex::default() }))
    }

    /// Which of the partitions `consumer` owns it has read to their end, asked of the brokers on a
    /// blocking thread (the caller's task waits, the runtime does not). When the brokers do not
    /// answer in time, no partition is vouched for (the order waits at most
    /// `stage.max_order_wait_ms`), and the failure is logged at most every 30 s.
    ///
    /// A partition is read to its end when the offset the consumer reads next is the partition's
    /// end as the brokers report it now (under `read_committed`, librdkafka's default, the last
    /// stable offset). The offset read next is the one after the last message passed to the
    /// application; where none was passed since the partition was assigned, the group's committed
    /// offset, or where nothing is committed the partition's first offset (`auto.offset.reset =
    /// earliest`, the consumer's default) or its end now (`latest`: the consumer started at the end
    /// when it was assigned the partition; a post that came after that is vouched for before it is
    /// read, until the consumer passes one on and has a position). `at` is taken before the
    /// brokers are asked.
    /// A partition without a leader is left out, not waited for.
    ///
    /// The caller must not let the consumer pass messages on while it waits (in the consumer loop,
    /// by awaiting this before it reads on): the positions are taken when it is called.
    ///
    /// librdkafka's statistics cannot say this: their high watermark is the one of the
    /// partition's last fetch, which falls behind under load, and after a reassignment it may be
    /// one fetched during an earlier assignment, older than the committed offset it is compared
    /// with. Both vouched for partitions whose newest posts were still unread.
    pub async fn read_to_end<C: ConsumerContext>(self: &Arc<Self>, consumer: &impl Consumer<C>) -> ReadToEnd {
        let at = Utc::now();
        let asked = match consumer.position() {
            Ok(positions) => {
                let ends = Arc::clone(self);
                match tokio::task::spawn_blocking(move || ends.ask(at, offsets(&positions))).await {
                    Ok(asked) => asked.map_err(anyhow::Error::from),
                    Err(stopped) => Err(anyhow::Error::from(stopped)),
                }
            }
            Err(error) => Err(error.into()),
        };
        asked.unwrap_or_else(|error| {
            self.warn(&error);
            ReadToEnd { at, partitions: BTreeSet::new() }
        })
    }

    /// Asks, within one deadline, where the partitions of `next` end, and where the group
    /// committed those without an offset read next.
    fn ask(&self, at: DateTime<Utc>, mut next: BTreeMap<Partition, Option<i64>>) -> KafkaResult<ReadToEnd> {
        // In no consumer loop, librdkafka's log lines and errors wait on the client's main queue.
        let _ = self.client.poll(Duration::ZERO);
        let deadline = std::time::Instant::now() + self.timeout;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        // Asked with a leader that no longer leads, librdkafka fails the whole question: the
        // leaders are asked first, and partitions without one left out.
        let led = self.led(next.keys().map(|(topic, _)| topic.as_str()).collect(), left())?;
        next.retain(|partition, _| led.contains(partition));
        if next.is_empty() {
            return Ok(ReadToEnd { at, partitions: BTreeSet::new() });
        }
        let last = offsets(&self.client.offsets_for_times(list(next.keys(), Offset::End), left())?);
        let unread = unknown(&next);
        if !unread.is_empty() {
            let committed = offsets(&self.client.committed_offsets(list(unread.iter(), Offset::Invalid), left())?);
            next.extend(committed.into_iter().filter(|(_, offset)| offset.is_some()));
            let uncommitted = unknown(&next);
            if self.starts_at_end {
                next.extend(
                    uncommitted.iter().map(|partition| (partition.clone(), last.get(partition).copied().flatten())),
                );
            } else if !uncommitted.is_empty() {
                next.extend(offsets(
                    &self.client.offsets_for_times(list(uncommitted.iter(), Offset::Beginning), left())?,
                ));
            }
        }
        let partitions = next
            .into_iter()
            .filter(|(partition, next)| match (next, last.get(partition)) {
                // Past the end, the log was truncated or the commit is stale: the consumer will be
                // reset to an earlier offset and read again what this would vouch for.
                (Some(next), Some(Some(end))) => next == end,
                _ => false,
            })
            .map(|(partition, _)| partition)
            .collect();
        Ok(ReadToEnd { at, partitions })
    }

    /// The partitions of `topics` that have a leader now, as the brokers' metadata says (which
    /// also refreshes the client's own).
    fn led(&self, topics: BTreeSet<&str>, timeout: Duration) -> KafkaResult<BTreeSet<Partition>> {
        let mut led = BTreeSet::new();
        for topic in topics {
            let metadata = self.client.fetch_metadata(Some(topic), timeout)?;
            for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
                if partition.leader() >= 0 && partition.error().is_none() {
                    led.insert((topic.to_owned(), partition.id()));
                }
            }
        }
        Ok(led)
    }

    /// Logs a failed question, at most once every [`ASK_WARNING_INTERVAL`].
    fn warn(&self, error: &anyhow::Error) {
        let mut failures = self.failures.lock().expect("failures lock poisoned");
        if failures.warned.is_some_and(|warned| warned.elapsed() < ASK_WARNING_INTERVAL) {
            failures.unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut failures.unlogged);
        tracing::warn!(
            error = format!("{error:#}"),
            unlogged,
            "cannot ask the brokers which partitions are read to their end; no partition is taken as idle"
        );
        failures.warned = Some(std::time::Instant::now());
    }
}

/// The partitions a consumer had read to their end, and when: what the order across input
/// partitions may take as idle ([`super::ordering`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadToEnd {
    /// When the brokers were asked: every message of these partitions appended before was passed
    /// to the application.
    pub at: DateTime<Utc>,
    /// The partitions.
    pub partitions: BTreeSet<Partition>,
}

/// Each partition of `list` with its offset, `None` where it has none or the brokers answered an
/// error for it.
fn offsets(list: &TopicPartitionList) -> BTreeMap<Partition, Option<i64>> {
    list.elements()
        .iter()
        .map(|element| {
            let offset = match (element.error(), element.offset()) {
                (Ok(()), Offset::Offset(offset)) => Some(offset),
                _ => None,
            };
            ((element.topic().to_owned(), element.partition()), offset)
        })
        .collect()
}

/// The partitions of `offsets` without one.
fn unknown(offsets: &BTreeMap<Partition, Option<i64>>) -> Vec<Partition> {
    offsets.iter().filter(|(_, offset)| offset.is_none()).map(|(partition, _)| partition.clone()).collect()
}

/// A list of `partitions`, each with `offset` (for `offsets_for_times`, the timestamp asked for:
/// `End` is the latest offset, `Beginning` the first).
fn list<'a>(partitions: impl Iterator<Item = &'a Partition>, offset: Offset) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        // Only fails for an offset with no raw value, which these have.
        let _ = list.add_partition_offset(topic, *partition, offset);
    }
    list
}

fn partitions(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

/// How many messages of a partition are still to be read: its high watermark less the offset the
/// consumer reads next (the committed offset before it has read any). librdkafka's own
/// `consumer_lag` counts from the committed offset, which moves only at checkpoints (every
/// `state.snapshot_interval_secs`) and is unknown before the first: it reads as a backlog that is
/// already processed, or as none at all.
fn read_lag(stats: &rdkafka::statistics::Partition) -> Option<i64> {
    let position = if stats.app_offset >= 0 { stats.app_offset } else { stats.committed_offset };
    (stats.hi_offset >= 0 && position >= 0).then(|| (stats.hi_offset - position).max(0))
}

impl ClientContext for LagContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) {
            self.brokers_up.store(false, Ordering::Relaxed);
            self.update_ready(&self.ownership.lock().expect("ownership lock poisoned"));
        }
    }

    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|broker| broker.nodeid >= 0 && broker.state == "UP");
        self.brokers_up.store(up, Ordering::Relaxed);
        self.update_ready(&self.ownership.lock().expect("ownership lock poisoned"));
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // The internal partition -1 ("UA") is not a real one; partitions this member
                // does not consume have no position.
                let Some(lag) = read_lag(stats).filter(|_| *partition >= 0) else { continue };
                let partition = partition.to_string();
                self.metrics.consumer_lag.with_label_values(&[topic.as_str(), partition.as_str()]).set(lag);
            }
        }
    }
}

impl ConsumerContext for LagContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        // A member standing by is revoked nothing at every rebalance: nothing to checkpoint.
        if list.count() == 0 {
            return;
        }
        let Some(progress) = self.progress.get() else { return };
        // The callback runs inside the loop's `recv`, when the loop holds no lock.
        match progress.try_lock() {
            Ok(mut progress) => {
                self.in_rebalance.store(true, Ordering::Relaxed);
                progress.before_revoke(consumer, &partitions(list));
                self.in_rebalance.store(false, Ordering::Relaxed);
            }
            Err(_) => {
                self.metrics.revocations_unchecked.inc();
                tracing::warn!("the consumer loop is busy: no checkpoint before the partitions are revoked")
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = list.count(), "partitions assigned");
                let assigned = partitions(list);
                let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
                // Whether a window is in place needs the group's committed offsets, which the loop
                // reads: asked for here, inside the callback, they held up fetching under load.
                if ownership.held.is_some() {
                    match consumer.pause(list) {
                        Ok(()) => {
                            ownership.to_check.extend(assigned.iter().cloned());
                            self.to_check.notify_one();
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot pause new partitions; consuming them without their window")
                        }
                    }
                }
                ownership.assigned.extend(assigned);
                self.metrics.assignments.inc();
                self.metrics.partitions_owned.set(ownership.assigned.len() as i64);
                self.update_ready(&ownership);
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = list.count(), "partitions revoked");
                let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
                for partition in partitions(list) {
                    ownership.assigned.remove(&partition);
                    ownership.to_check.remove(&partition);
                }
                self.metrics.partitions_owned.set(ownership.assigned.len() as i64);
                self.update_ready(&ownership);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// The group's committed offset of each partition of `list` (`None`: nothing committed), or
/// `None` when the coordinator does not answer. A partition the coordinator answers with an error
/// for (an offset commit still settling, say) is asked again a few times, then left out.
pub fn committed_offsets(
    consumer: &impl Consumer<LagContext>,
    list: &TopicPartitionList,
) -> Option<BTreeMap<Partition, Option<i64>>> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let committed = match consumer.committed_offsets(list.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the committed offsets of the assigned partitions");
                return None;
            }
        };
        let (answered, failed): (Vec<_>, Vec<_>) = committed.elements().into_iter().partition(|e| e.error().is_ok());
        if failed.is_empty() || attempts == 5 {
            for element in &failed {
                let error = element.error().expect_err("failed");
                tracing::warn!(topic = element.topic(), partition = element.partition(), %error, "no committed offset");
            }
            let offsets = answered.iter().map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            });
            return Some(offsets.collect());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(number: i32) -> Partition {
        ("posts".to_owned(), number)
    }

    #[test]
    fn lag_counts_from_what_was_read_not_from_what_was_committed() {
        let stats = |app_offset, committed_offset, hi_offset| rdkafka::statistics::Partition {
            app_offset,
            committed_offset,
            hi_offset,
            ..Default::default()
        };
        // Read up to 900 of 1,000, nothing committed yet (librdkafka's consumer_lag is -1).
        assert_eq!(read_lag(&stats(900, -1001, 1_000)), Some(100));
        // Read to the end, committed at 200 by the last checkpoint: nothing is waiting.
        assert_eq!(read_lag(&stats(1_000, 200, 1_000)), Some(0));
        // Assigned, nothing read yet: from the committed offset.
        assert_eq!(read_lag(&stats(-1001, 200, 1_000)), Some(800));
        // Not consumed by this member, or its end not known yet.
        assert_eq!(read_lag(&stats(-1001, -1001, 1_000)), None);
        assert_eq!(read_lag(&stats(900, 200, -1001)), None);
    }

    #[test]
    fn a_partition_is_rebuilt_only_when_the_group_committed_past_what_the_window_holds() {
        let mut ownership = Ownership::holding(Some(BTreeMap::from([(partition(0), 10)])));
        // Held up to what the group committed (this member committed it), or further.
        assert!(!ownership.needs_rebuild(&partition(0), Some(10)));
        assert!(!ownership.needs_rebuild(&partition(0), Some(7)));
        // Another member read on: a restored snapshot or an earlier ownership is stale.
        assert!(ownership.needs_rebuild(&partition(0), Some(11)));
        // Never held: rebuilt when something was committed, not when nothing was.
        assert!(ownership.needs_rebuild(&partition(1), Some(3)));
        assert!(!ownership.needs_rebuild(&partition(1), Some(0)));
        assert!(!ownership.needs_rebuild(&partition(1), None));
        // A revocation notes how far the window holds the partition.
        ownership.hold(partition(0), 20);
        assert!(!ownership.needs_rebuild(&partition(0), Some(20)));
        // Rebuilding off: never.
        assert!(!Ownership::holding(None).needs_rebuild(&partition(0), Some(100)));
    }

    #[tokio::test]
    async fn the_brokers_say_which_partitions_are_read_to_their_end() {
        use rdkafka::consumer::DefaultConsumerContext;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("posts", 4, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let client = |group: &str| {
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .clone()
        };
        let producer: ThreadedProducer<DefaultProducerContext> = client("producer").create().unwrap();
        let send = |partition: i32| {
            producer.send(BaseRecord::<(), str>::to("posts").partition(partition).payload("{}")).unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        };
        for _ in 0..3 {
            send(0);
        }
        send(2);
        let consumer: BaseConsumer<DefaultConsumerContext> = client("readers").create().unwrap();
        let mut assigned = TopicPartitionList::new();
        for number in 0..3 {
            assigned.add_partition("posts", number);
        }
        // Partition 2's one post was read and committed by a member before this one.
        let mut committed = TopicPartitionList::new();
        committed.add_partition_offset("posts", 2, Offset::Offset(1)).unwrap();
        consumer.assign(&assigned).unwrap();
        consumer.commit(&committed, rdkafka::consumer::CommitMode::Sync).unwrap();
        let config = crate::config::Config {
            kafka: crate::config::KafkaConfig { brokers: brokers.clone(), ..Default::default() },
            ..Default::default()
        };
        let ends = PartitionEnds::new(&config, "readers", Duration::from_secs(10)).unwrap();
        let before = Utc::now();
        let read_to_end = ends.read_to_end(&consumer).await;
        assert!(read_to_end.at >= before, "the time is taken when the brokers are asked");
        assert_eq!(
            read_to_end.partitions,
            BTreeSet::from([partition(1), partition(2)]),
            "nothing read yet: posts/0 starts at its first offset, posts/1 is empty, posts/2 is committed at its end"
        );
        for _ in 0..3 {
            consumer.poll(Duration::from_secs(10)).unwrap().unwrap();
        }
        let all = BTreeSet::from([partition(0), partition(1), partition(2)]);
        assert_eq!(ends.read_to_end(&consumer).await.partitions, all);
        send(1);
        assert_eq!(
            ends.read_to_end(&consumer).await.partitions,
            BTreeSet::from([partition(0), partition(2)]),
            "posts/1 has a post unread"
        );
        consumer.poll(Duration::from_secs(10)).unwrap().unwrap();
        // A partition without a leader is left out; the others are still answered for, at once.
        // (Paused first: the mock broker crashes when asked to fetch from a leaderless partition.)
        let mut one = TopicPartitionList::new();
        one.add_partition("posts", 1);
        consumer.pause(&one).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.partition_leader("posts", 1, None).unwrap();
        let asked = std::time::Instant::now();
        assert_eq!(ends.read_to_end(&consumer).await.partitions, BTreeSet::from([partition(0), partition(2)]));
        assert!(asked.elapsed() < Duration::from_secs(10), "the leaderless partition was waited for");
        cluster.partition_leader("posts", 1, Some(1)).unwrap();
        assert_eq!(ends.read_to_end(&consumer).await.partitions, all);
        // A group that starts at the end (`auto.offset.reset = latest`) has read a partition with
        // nothing committed to its end before it passes anything on.
        let mut starting_late = config.clone();
        starting_late.kafka.properties.insert("auto.offset.reset".to_owned(), "latest".to_owned());
        let late: BaseConsumer<DefaultConsumerContext> =
            client("late").set("auto.offset.reset", "latest").create().unwrap();
        late.assign(&assigned).unwrap();
        let ends = PartitionEnds::new(&starting_late, "late", Duration::from_secs(10)).unwrap();
        assert_eq!(ends.read_to_end(&late).await.partitions, all, "posts/0 and posts/2 hold posts from before");
    }
}
