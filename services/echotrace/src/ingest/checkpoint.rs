//! What the consumer has read and not committed yet, and the checkpoint that makes it durable and
//! commits it.
//!
//! [`Progress`] holds the pipeline, the position read in every partition, the deliveries to await
//! and the outlets. The consumer loop takes a checkpoint every `output.flush_rows` posts or
//! `output.flush_interval_ms`, and on its way out; the rebalance callback takes one before
//! partitions are revoked ([`Progress::before_revoke`]), so their next owner goes on from where
//! this member stopped instead of reading its last seconds again.
//!
//! Posts wait for one order across input partitions before the pipeline takes them
//! ([`super::ordering`]); the positions committed and snapshotted are then, in each partition,
//! the smallest offset still held.

use super::IngestError;
use super::lag::{LagContext, Ownership, Partition, ReadToEnd};
use super::ordering::{Flow, HeldPost, PartitionOrder};
use crate::alerting::AlertNotice;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Processed};
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::sinks::parquet::io_error;
use crate::stages::score::OwnerRecords;
use crate::stages::{Decoded, InputDecoder};
use crate::state::{StateError, StateStore};
use chrono::DateTime;
use echotrace_core::state::Position;
use futures::future::try_join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a checkpoint waits for the group's committed offsets.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Where what the pipeline produces goes beyond Parquet, and the snapshot file.
pub struct Outlets {
    /// Dead letters, edges and alert events to Kafka.
    pub publisher: KafkaPublisher,
    /// The snapshot file, when state snapshots are on.
    pub state: Option<StateStore>,
    /// Whether an Alertmanager dispatcher takes alert notices.
    pub dispatches_alerts: bool,
    /// Decodes the consumed messages: posts, or prepared posts in the `detect` stage.
    pub decoder: InputDecoder,
    /// Where the scorer's records go, where the owners of cascades run as the `score` stage.
    pub owner_records: Option<OwnerRecords>,
}

/// The pipeline and what was read since the last commit; shared by the consumer loop and the
/// consumer's rebalance callback, which runs inside the loop's `recv` (never while the loop
/// holds it).
pub struct Progress {
    /// The detector, the scorer and their Parquet sink.
    pub pipeline: Pipeline,
    outlets: Outlets,
    metrics: Arc<Metrics>,
    ownership: Arc<Mutex<Ownership>>,
    /// The next offset of every partition read since this member started.
    positions: BTreeMap<Partition, i64>,
    /// The posts waiting for one order across input partitions.
    order: PartitionOrder,
    /// Whether anything was read since the last checkpoint.
    dirty: bool,
    /// Whether offsets were read that are not committed yet.
    uncommitted: bool,
    deliveries: Vec<DeliveryFuture>,
    /// Alert notices for the dispatcher, sent by the loop (the callback cannot await a full channel).
    unsent: Vec<AlertNotice>,
    snapshot_interval: Duration,
    last_snapshot: Instant,
    /// The snapshot being written in the background, if one is.
    writing: Option<SnapshotWrite>,
}

/// A snapshot being encoded, written and synced on its own thread from a copy of the state taken
/// at a checkpoint, so that consumption pauses only for the copy; the offsets it reflects are
/// committed once it is durable. One at a time: the next is not taken before this one is in place.
struct SnapshotWrite {
    /// The writer; the snapshot's size once it is durable.
    thread: std::thread::JoinHandle<Result<u64, StateError>>,
    /// The positions it reflects.
    positions: BTreeMap<Partition, i64>,
    /// When the checkpoint started it.
    started: Instant,
}

impl Progress {
    /// Progress from nothing read, posts held for `order`, snapshotting at most every
    /// `snapshot_interval`.
    pub fn new(
        pipeline: Pipeline,
        outlets: Outlets,
        order: PartitionOrder,
        metrics: Arc<Metrics>,
        ownership: Arc<Mutex<Ownership>>,
        snapshot_interval: Duration,
    ) -> Progress {
        Progress {
            pipeline,
            outlets,
            metrics,
            ownership,
            positions: BTreeMap::new(),
            order,
            dirty: false,
            uncommitted: false,
            deliveries: Vec::new(),
            unsent: Vec::new(),
            snapshot_interval,
            last_snapshot: Instant::now(),
            writing: None,
        }
    }

    /// Takes one message: a post goes through the pipeline once the order across input partitions
    /// reaches it, an idle marker moves the order on, anything else goes to the dead-letter topic
    /// with its reason. Either way its offset counts as read.
    pub fn read(&mut self, message: &BorrowedMessage<'_>) -> Result<(), IngestError> {
        let source =
            Source { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        let payload = message.payload().unwrap_or_default();
        match self.outlets.decoder.decode(payload) {
            Ok(Decoded::Post { input, foreign, source: input_partition }) => {
                if foreign {
                    self.metrics.prepared_foreign.inc();
                }
                let produced_at = message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis);
                let held = HeldPost {
                    input,
                    produced_at,
                    read_from: (source.topic.clone(), source.partition),
                    offset: source.offset,
                };
                self.follow_assignment();
                if let Some(held) = self.order.admit(input_partition, held) {
                    self.process(held)?;
                }
                self.release()?;
            }
            Ok(Decoded::Idle { source: input_partition, at }) => {
                self.follow_assignment();
                self.order.idle(input_partition, at, &(source.topic.clone(), source.partition));
                self.release()?;
            }
            Err(error) => {
                let origin = format!("{}/{}/{}", source.topic, source.partition, source.offset);
                tracing::warn!(source = %origin, kind = error.kind(), %error, "dead-lettering message");
                self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
                self.deliveries.push(self.outlets.publisher.dead_letter(message.key(), payload, &source, &error)?);
            }
        }
        self.positions.insert((source.topic, source.partition), source.offset + 1);
        self.dirty = true;
        Ok(())
    }

    /// While posts wait for the order: takes the partitions found read to their end, if asked
    /// ([`Progress::awaits_idle_marks`]), then processes what that and the posts' waiting time
    /// allow.
    pub fn renew_idle(&mut self, read_to_end: Option<&ReadToEnd>) -> Result<(), IngestError> {
        if !self.order.holds_posts() {
            return Ok(());
        }
        self.follow_assignment();
        if let Some(read_to_end) = read_to_end {
            self.order.read_to_end(read_to_end);
        }
        self.release()
    }

    /// Whether posts wait for the order on the consumed partitions themselves (`whole`): the
    /// brokers are to be asked which of them the consumer has read to their end.
    pub fn awaits_idle_marks(&self) -> bool {
        self.order.holds_posts() && self.order.reads_input()
    }

    /// Whether the order waits on the consumed partitions themselves (`whole`), which the
    /// consumer finds read to their end.
    pub fn reads_input(&self) -> bool {
        self.order.reads_input()
    }

    /// The partitions to pause because too many of their posts wait for the order, and those to
    /// resume.
    pub fn take_flow(&mut self) -> Flow {
        self.order.take_flow()
    }

    /// Whether the order holds `partition` paused because too many of its posts wait.
    pub fn holds_paused(&self, partition: &Partition) -> bool {
        self.order.holds_paused(partition)
    }

    /// Hands a post to the pipeline and publishes what it produced.
    fn process(&mut self, held: HeldPost) -> Result<(), IngestError> {
        // What it writes is flushed at the next checkpoint, even when no message is read before.
        self.dirty = true;
        let processed = self.pipeline.submit_input(held.input, held.produced_at);
        self.publish(processed)
    }

    /// Has the order wait for the partitions this member owns now, and drop what it held of
    /// those it gave up (their next owner reads them from the commit).
    fn follow_assignment(&mut self) {
        let ownership = self.ownership.lock().expect("ownership lock poisoned");
        if self.order.follow(ownership.assigned()) {
            // A partition given up and handed back is read again from the group's commit: what
            // this member read of it before says nothing any more.
            self.positions.retain(|partition, _| ownership.owns(partition));
        }
    }

    /// Processes the posts the order has reached (after [`Progress::follow_assignment`], so only
    /// of partitions this member still owns).
    fn release(&mut self) -> Result<(), IngestError> {
        let pipeline = &self.pipeline;
        for held in self.order.release(|id| pipeline.has_taken(id)) {
            self.process(held)?;
        }
        Ok(())
    }

    /// Runs the waiting embedding batch and the batch in flight, and publishes what they produced.
    pub fn run_batch(&mut self) -> Result<(), IngestError> {
        let processed = self.pipeline.run_batch();
        self.publish(processed)
    }

    /// Runs what is due at the pipeline's batch deadline ([`Pipeline::run_due_batch`]) and
    /// publishes what it produced.
    pub fn run_due_batch(&mut self) -> Result<(), IngestError> {
        let processed = self.pipeline.run_due_batch();
        self.publish(processed)
    }

    /// Publishes what processed posts produced (edges and alerts to Kafka, alerts for the
    /// dispatcher, the scorer's records to the owners of cascades, one message per owner) and
    /// keeps the deliveries to await at the checkpoint.
    fn publish(&mut self, processed: Vec<Processed>) -> Result<(), IngestError> {
        let mut owner_records = Vec::new();
        for mut processed in processed {
            owner_records.append(&mut processed.owner_records);
            self.deliveries.extend(self.outlets.publisher.edges(&processed.edges)?);
            self.deliveries.extend(self.outlets.publisher.alerts(&processed.alerts)?);
            if self.outlets.dispatches_alerts {
                let produced_at = processed.produced_at;
                self.unsent.extend(processed.alerts.into_iter().map(|event| AlertNotice { event, produced_at }));
            }
        }
        if let Some(owners) = &self.outlets.owner_records {
            self.deliveries.extend(owners.send(&self.outlets.publisher, owner_records)?);
        }
        Ok(())
    }

    /// The alert notices not yet handed to the dispatcher.
    pub fn take_unsent(&mut self) -> Vec<AlertNotice> {
        std::mem::take(&mut self.unsent)
    }

    /// Runs the waiting embedding batch, flushes Parquet and awaits every delivery; then, without
    /// state snapshots, commits the offsets. With them, when one is due, copies the state and
    /// writes the snapshot on a thread of its own (`SnapshotWrite`); the offsets it reflects are committed
    /// at the first checkpoint after it is durable. `last` (shutdown, revocation) waits for a
    /// write under way, then writes a snapshot here and commits what it reflects.
    pub async fn take(&mut self, consumer: &impl Consumer<LagContext>, last: bool) -> Result<(), IngestError> {
        if self.dirty {
            self.run_batch()?;
            self.pipeline.flush()?;
            let outcomes = try_join_all(self.deliveries.drain(..))
                .await
                .map_err(|_| IngestError::Delivery("the producer was dropped".into()))?;
            if let Some(Err((error, _))) = outcomes.into_iter().find(Result::is_err) {
                return Err(IngestError::Delivery(error.to_string()));
            }
            self.metrics.checkpoints.inc();
            self.dirty = false;
            self.uncommitted = true;
        }
        self.finish_snapshot(consumer, last)?;
        if !self.uncommitted {
            return Ok(());
        }
        let owned = self.owned_positions();
        if owned.is_empty() {
            // Nothing owned, nothing to commit; and no snapshot: in a folder shared with a member
            // that owns the partitions now (a standby's), it would replace that member's.
            self.uncommitted = false;
            return Ok(());
        }
        let Some(store) = &self.outlets.state else {
            self.uncommitted = !self.commit(consumer, &owned);
            return Ok(());
        };
        if !last && (self.writing.is_some() || self.last_snapshot.elapsed() < self.snapshot_interval) {
            return Ok(());
        }
        let positions: Vec<Position> = owned
            .iter()
            .map(|((topic, partition), offset)| Position {
                source: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        self.last_snapshot = Instant::now();
        if last {
            let bytes = self.pipeline.snapshot(store, &positions)?;
            tracing::debug!(bytes, partitions = positions.len(), "state snapshot written");
            self.uncommitted = !self.commit(consumer, &owned);
            return Ok(());
        }
        let (detector, scorer) = self.pipeline.state_copy();
        let writer = store.clone();
        let thread = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || writer.write(&detector, &scorer, &positions))
            .map_err(|error| StateError::Io(io_error(store.path())(error)))?;
        self.writing = Some(SnapshotWrite { thread, positions: owned, started: self.last_snapshot });
        Ok(())
    }

    /// Commits the offsets of a snapshot written in the background once it is durable (or waits
    /// for it, with `wait`). A write that failed stops the consumer, as one written here would.
    fn finish_snapshot(&mut self, consumer: &impl Consumer<LagContext>, wait: bool) -> Result<(), IngestError> {
        let Some(write) = self.writing.take_if(|write| wait || write.thread.is_finished()) else { return Ok(()) };
        let bytes = write.thread.join().map_err(|_| {
            let path = self.outlets.state.as_ref().map(|store| store.path().to_owned()).unwrap_or_default();
            StateError::Io(io_error(&path)(std::io::Error::other("the snapshot writer stopped unexpectedly")))
        })??;
        self.metrics.observe_snapshot_written(bytes, write.started.elapsed());
        tracing::debug!(bytes, partitions = write.positions.len(), "state snapshot written");
        // Nothing read since the snapshot: its offsets are all there is to commit.
        let current = !self.dirty && write.positions == self.owned_positions();
        if self.commit(consumer, &write.positions) && current {
            self.uncommitted = false;
        }
        Ok(())
    }

    /// The next offset of every partition read and owned now, not past a post still held.
    fn owned_positions(&self) -> BTreeMap<Partition, i64> {
        let ownership = self.ownership.lock().expect("ownership lock poisoned");
        self.positions
            .keys()
            .filter(|partition| ownership.owns(partition))
            .filter_map(|partition| Some((partition.clone(), self.position(partition)?)))
            .collect()
    }

    /// The offset up to which `partition`'s messages are processed: the next one read, or the
    /// first post still held for the order.
    fn position(&self, partition: &Partition) -> Option<i64> {
        let read = *self.positions.get(partition)?;
        let held = self.order.first_held(partition);
        Some(held.map_or(read, |held| held.min(read)))
    }

    /// Commits `positions` where this member still owns the partition and they are ahead of the
    /// group's committed offsets; returns whether the commit went through (a failure is counted
    /// and retried at the next checkpoint).
    fn commit(&self, consumer: &impl Consumer<LagContext>, positions: &BTreeMap<Partition, i64>) -> bool {
        let owned: Vec<(&Partition, &i64)> = {
            let ownership = self.ownership.lock().expect("ownership lock poisoned");
            positions.iter().filter(|(partition, _)| ownership.owns(partition)).collect()
        };
        if owned.is_empty() {
            return true;
        }
        // Only what is ahead of the group's committed offsets: another member may have owned a
        // partition in between and gone further.
        let committed = match consumer.committed(COMMITTED_TIMEOUT) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, "cannot read the committed offsets; committing at the next checkpoint");
                self.metrics.commit_failures.inc();
                return false;
            }
        };
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in owned {
            let current = committed.find_partition(topic, *partition).and_then(|e| e.offset().to_raw());
            if current.is_none_or(|current| *offset > current) {
                list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).expect("an offset is valid");
            }
        }
        // A failed commit loses nothing: the rows and the snapshot are durable, and the next
        // checkpoint commits again (a crash before it re-reads, and the detector or the readers
        // drop what it had). The broker may be away, or a rebalance under way.
        tracing::debug!(offsets = ?list, "committing");
        if list.count() > 0
            && let Err(error) = consumer.commit(&list, CommitMode::Sync)
        {
            tracing::warn!(%error, "offset commit failed; committing again at the next checkpoint");
            self.metrics.commit_failures.inc();
            return false;
        }
        true
    }

    /// Takes over the state in the snapshot, when the group has assigned this member
    /// `partitions` and it reads no other: a member starting, or one standing by while another
    /// owned them. Where the snapshot holds each of them at least up to the group's `committed`
    /// offset, its detector and scorer replace this member's, the alerts it had firing go on
    /// being sent, and the offsets it holds are returned. `None`, and nothing replaced, where
    /// there is no snapshot, it is refused (and set aside with the reason), it does not reach the
    /// commits, or this member reads other partitions, whose window a snapshot would replace.
    pub fn take_over(
        &mut self,
        partitions: &BTreeSet<Partition>,
        committed: Option<&BTreeMap<Partition, Option<i64>>>,
    ) -> Option<BTreeMap<Partition, i64>> {
        let store = self.outlets.state.as_ref()?;
        let reads_others = {
            let ownership = self.ownership.lock().expect("ownership lock poisoned");
            ownership.assigned().iter().chain(self.positions.keys()).any(|partition| !partitions.contains(partition))
        };
        if reads_others {
            return None;
        }
        let started = Instant::now();
        let snapshot = match store.read() {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                tracing::info!(snapshot = %store.path().display(), "no state snapshot yet");
                return None;
            }
            Err(error) => {
                let aside = store.path().with_extension("refused");
                let moved = std::fs::rename(store.path(), &aside).is_ok();
                tracing::warn!(
                    snapshot = %store.path().display(),
                    %error,
                    set_aside = %if moved { aside.display().to_string() } else { "no".to_owned() },
                    "state snapshot refused"
                );
                return None;
            }
        };
        let held: BTreeMap<Partition, i64> =
            snapshot.positions.iter().map(|p| ((p.source.clone(), p.partition), p.offset)).collect();
        // Commits are taken only behind a snapshot, so the last one reaches them; an older one
        // (another member's folder, a copy) would leave out posts the group has gone past.
        let short: Vec<&Partition> = partitions
            .iter()
            .filter(|partition| match committed.and_then(|committed| committed.get(*partition)) {
                Some(Some(offset)) => held.get(*partition).is_none_or(|held| held < offset),
                Some(None) => false,
                None => true,
            })
            .collect();
        if !short.is_empty() {
            tracing::info!(snapshot = %store.path().display(), positions = ?held, short_of_the_commits = ?short, "state snapshot not taken over");
            return None;
        }
        let window = snapshot.detector.window_len();
        let firing = self.pipeline.resume(snapshot);
        self.metrics.state_takeovers.inc();
        tracing::info!(
            snapshot = %store.path().display(),
            posts_in_window = window,
            alerts_firing = firing.len(),
            positions = ?held,
            seconds = started.elapsed().as_secs_f64(),
            "state restored"
        );
        // The same alerts to Alertmanager, with their first startsAt: not new pages.
        if self.outlets.dispatches_alerts {
            self.unsent.extend(firing.into_iter().map(|event| AlertNotice { event, produced_at: None }));
        }
        Some(held)
    }

    /// Before `revoked` partitions are given up: takes a checkpoint with a snapshot (what was read
    /// becomes durable and is committed while this member still owns it), unless the group has
    /// given them to another member already, and notes how far this member's window holds each of
    /// them, so that, should one come back, it is taken over or rebuilt only if another member
    /// went further meanwhile.
    pub fn before_revoke(&mut self, consumer: &BaseConsumer<LagContext>, revoked: &[Partition]) {
        let started = Instant::now();
        if consumer.assignment_lost() {
            // The group gave them to another member already (this one's session or
            // max.poll.interval.ms expired): a snapshot now would replace, in a shared folder,
            // the one that member restored and goes on from. It reads on from the last commit.
            self.metrics.revocations_unchecked.inc();
            tracing::warn!(partitions = ?revoked, "assignment lost to another member: no checkpoint before the revocation");
        } else {
            self.checkpoint_before_revoke(consumer, revoked, started);
        }
        self.forget_revoked(consumer, revoked);
    }

    /// The checkpoint with a snapshot that [`Progress::before_revoke`] takes while this member
    /// still owns `revoked`.
    fn checkpoint_before_revoke(
        &mut self,
        consumer: &BaseConsumer<LagContext>,
        revoked: &[Partition],
        started: Instant,
    ) {
        // The deliveries are completed by the producer's own thread, so waiting here cannot
        // deadlock; nothing else in a checkpoint awaits.
        match futures::executor::block_on(self.take(consumer, true)) {
            Ok(()) => tracing::info!(
                partitions = ?revoked,
                seconds = started.elapsed().as_secs_f64(),
                "checkpoint taken before the partitions are revoked"
            ),
            // Nothing is lost: the next owner reads on from the last commit.
            Err(error) => {
                self.metrics.revocations_unchecked.inc();
                tracing::warn!(%error, "no checkpoint before the partitions are revoked")
            }
        }
    }

    /// Notes how far this member's window holds `revoked`, forgets its positions in them, and
    /// lifts the order's pauses of them.
    fn forget_revoked(&mut self, consumer: &BaseConsumer<LagContext>, revoked: &[Partition]) {
        let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
        for partition in revoked {
            if let Some(offset) = self.position(partition) {
                ownership.hold(partition.clone(), offset);
            }
            self.positions.remove(partition);
        }
        drop(ownership);
        // What they held is read again by their next owner; a pause of the order's would outlive
        // the revocation.
        let paused = self.order.revoke(revoked);
        if !paused.is_empty() {
            let mut list = TopicPartitionList::new();
            for (topic, partition) in &paused {
                list.add_partition(topic, *partition);
            }
            if let Err(error) = consumer.resume(&list) {
                tracing::warn!(%error, partitions = ?paused, "cannot resume partitions before they are revoked");
            }
        }
    }
}
