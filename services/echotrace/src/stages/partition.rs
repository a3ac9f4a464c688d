//! What the stages that read one assigned partition share: the `link` stage (the probe
//! partition), the `score` stage (an owner's partition of the owner topic) and the `gate` stage.
//!
//! Each holds a state that is a function of its partition's messages in order. So it is restored
//! from its snapshot (or is empty, and reads from the beginning), and it takes the messages below
//! its group's committed offset again without sending or writing anything: an earlier life did.
//! [`PartitionReader`] assigns the partition, restores the snapshot (setting aside one that
//! cannot be used, with the reason), dead-letters a message that is not one of the stage's,
//! commits and writes snapshots. For the stages whose output is Kafka messages (`link`, `score`),
//! [`run_acknowledged`] is the whole loop: an offset is committed once everything the messages
//! before it sent is acknowledged, and every `state.snapshot_interval_secs`, and on the way out,
//! the stage waits for what it sent, commits and writes its snapshot at the next offset.

use crate::config::Config;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::stages::InvalidInput;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::state::{PartitionSnapshot, PartitionStage, Position};
use futures::StreamExt;
use futures::future::try_join_all;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How long start-up waits for the brokers' metadata and the committed offset.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a stage process serves while it runs: its metrics, whether it is ready, and where
/// `/healthz`, `/readyz` and `/metrics` listen.
pub struct Probes {
    /// The metrics it reports.
    pub metrics: Arc<Metrics>,
    /// Readiness: set once its partitions are assigned.
    pub ready: Arc<AtomicBool>,
    /// The probes' address.
    pub api_address: SocketAddr,
    /// The HTTP server task.
    pub server: tokio::task::JoinHandle<()>,
}

impl Probes {
    /// Serves the probes on `http.listen` until `shutdown`.
    pub async fn serve(config: &Config, shutdown: &Shutdown) -> anyhow::Result<Probes> {
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let health = Health { metrics: metrics.clone(), ready: ready.clone() };
        let (api_address, server) =
            http::serve_health(config.http.listen, health, config.http.token()?, shutdown.clone()).await?;
        Ok(Probes { metrics, ready, api_address, server })
    }
}

/// One assigned partition read by a stage process (through the consumer [`PartitionReader::open`]
/// returns with it), and where the stage stands on it.
pub struct PartitionReader {
    topic: String,
    partition: i32,
    /// The group's committed offset at start-up: the messages below it were taken by an earlier
    /// life, which sent or wrote what they made.
    committed: i64,
    /// The offset after the last message taken.
    next_offset: i64,
    /// The offset of the last snapshot written or restored.
    snapshot_offset: Option<i64>,
    store: Option<StateStore>,
    stage: PartitionStage,
    metrics: Arc<Metrics>,
}

impl PartitionReader {
    /// Restores `stage`'s snapshot from `store` and assigns `topic`'s `partition` to a consumer in
    /// `group`, from the snapshot's offset or, without one, from the beginning. Returns the
    /// consumer, the reader and the restored state. A snapshot that cannot be used is renamed
    /// `*.refused` and logged with the reason; the stage then starts empty.
    pub fn open<T: DeserializeOwned>(
        config: &Config,
        group: &str,
        (topic, partition): (&str, i32),
        store: Option<StateStore>,
        stage: PartitionStage,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(StreamConsumer, PartitionReader, Option<T>)> {
        let restored = store.as_ref().and_then(|store| restore::<T>(store, stage));
        let (state, start) =
            restored.map_or((None, None), |snapshot| (Some(snapshot.state), Some(snapshot.position.offset)));
        let consumer: StreamConsumer = crate::ingest::client_config(
            config,
            &[
                ("group.id", group),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", super::probes::FETCH_WAIT_MS),
            ],
        )
        .create()
        .map_err(crate::config::without_secret)
        .context("cannot create the Kafka consumer")?;
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        let committed = consumer
            .committed_offsets(list, METADATA_TIMEOUT)
            .with_context(|| format!("cannot read the committed offset of {topic}/{partition}"))?
            .find_partition(topic, partition)
            .and_then(|found| match found.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            })
            .unwrap_or(0);
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, start.map_or(Offset::Beginning, Offset::Offset))?;
        consumer.assign(&assignment)?;
        let reader = PartitionReader {
            topic: topic.to_owned(),
            partition,
            committed,
            next_offset: start.unwrap_or(0),
            snapshot_offset: start,
            store,
            stage,
            metrics,
        };
        Ok((consumer, reader, state))
    }

    /// The offset it reads from: its snapshot's, or `None` (the beginning).
    pub fn start(&self) -> Option<i64> {
        self.snapshot_offset
    }

    /// The group's committed offset at start-up.
    pub fn committed(&self) -> i64 {
        self.committed
    }

    /// Takes `message` (counted); returns whether an earlier life took it already, below the
    /// committed offset, so that what it makes was sent or written then.
    pub fn take(&mut self, message: &BorrowedMessage<'_>) -> bool {
        self.metrics.messages_consumed.inc();
        self.next_offset = message.offset() + 1;
        message.offset() < self.committed
    }

    /// Sends `message` to the dead-letter topic with `error`, logged and counted.
    pub fn dead_letter(
        &self,
        publisher: &KafkaPublisher,
        message: &BorrowedMessage<'_>,
        error: &InvalidInput,
    ) -> anyhow::Result<DeliveryFuture> {
        let source =
            Source { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, source.offset), kind = error.kind(), %error, "dead-lettering message");
        self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
        let payload = message.payload().unwrap_or_default();
        Ok(publisher.dead_letter(message.key(), payload, &source, error)?)
    }

    /// Commits `offset` (or, without one, the offset after the last message taken), unless it is
    /// not past the offset the group had committed at start-up: a stage catching up from an older
    /// snapshot would move the commit back, and take as new what an earlier life had sent. A
    /// failure is logged and counted: the next commit carries a later offset, and until then a
    /// restart takes a little again, which the stage's readers pass over.
    pub fn commit(&self, consumer: &StreamConsumer, offset: Option<i64>, mode: CommitMode) {
        let offset = offset.unwrap_or(self.next_offset);
        if offset <= self.committed {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        let _ = offsets.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset));
        match consumer.commit(&offsets, mode) {
            Ok(()) => self.metrics.checkpoints.inc(),
            Err(error) => {
                tracing::warn!(%error, "offset commit failed");
                self.metrics.commit_failures.inc();
            }
        }
    }

    /// Writes `state`'s snapshot at the offset after the last message taken, unless the last
    /// snapshot is at that offset already or snapshots are off.
    pub fn snapshot(&mut self, state: &impl Serialize) -> anyhow::Result<()> {
        let Some(store) = self.store.as_ref().filter(|_| self.snapshot_offset != Some(self.next_offset)) else {
            return Ok(());
        };
        let started = Instant::now();
        let position = Position { source: self.topic.clone(), partition: self.partition, offset: self.next_offset };
        let bytes = store.write_partition(self.stage, &PartitionSnapshot { state, position })?;
        self.metrics.observe_snapshot_written(bytes, started.elapsed());
        self.snapshot_offset = Some(self.next_offset);
        Ok(())
    }
}

/// The snapshot of `stage` in `store`, if there is one it can use; one that cannot be used is
/// set aside (renamed `*.refused`) with the reason logged.
fn restore<T: DeserializeOwned>(store: &StateStore, stage: PartitionStage) -> Option<PartitionSnapshot<T>> {
    match store.read_partition::<T>(stage) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            let aside = store.path().with_extension("refused");
            let moved = std::fs::rename(store.path(), &aside).is_ok();
            tracing::warn!(snapshot = %store.path().display(), %error, set_aside = moved, ?stage, "snapshot refused: reading the partition from its beginning");
            None
        }
    }
}

/// What a stage whose output is Kafka messages made of one message of its partition.
pub enum Taken {
    /// The messages it sent for it (none while an earlier life had sent them).
    Sent(Vec<DeliveryFuture>),
    /// The message is not one of the stage's: it goes to the dead-letter topic.
    Invalid(InvalidInput),
}

/// A stage that reads one partition and whose output is Kafka messages, run by
/// [`run_acknowledged`].
pub trait AcknowledgedStage: Send + 'static {
    /// What its snapshot holds.
    type State: Serialize;

    /// Takes one message's payload, in order; `again` when an earlier life took it (send nothing
    /// then, only bring the state up to date).
    fn take(&mut self, payload: &[u8], again: bool) -> anyhow::Result<Taken>;

    /// Its state, for a snapshot.
    fn state(&self) -> &Self::State;

    /// Where its messages and dead letters go.
    fn publisher(&self) -> &KafkaPublisher;
}

/// What was sent for a message (its output or its dead letter), and the offset to commit once it
/// is acknowledged.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<i64>> + Send>>;

/// Takes the partition's messages into `stage` until `shutdown` fires, committing each offset
/// once what the messages before it sent is acknowledged; every `state.snapshot_interval_secs`,
/// and on the way out, waits for everything sent, commits and writes the snapshot.
pub async fn run_acknowledged<S: AcknowledgedStage>(
    mut stage: S,
    consumer: StreamConsumer,
    mut reader: PartitionReader,
    snapshot_interval: Duration,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut snapshots = tokio::time::interval(snapshot_interval);
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = consumer.recv() => match message {
                Ok(message) => {
                    let again = reader.take(&message);
                    let deliveries = match stage.take(message.payload().unwrap_or_default(), again)? {
                        Taken::Sent(_) | Taken::Invalid(_) if again => continue,
                        Taken::Sent(deliveries) => deliveries,
                        Taken::Invalid(error) => vec![reader.dead_letter(stage.publisher(), &message, &error)?],
                    };
                    in_flight.push_back(Box::pin(acknowledged(deliveries, message.offset() + 1)));
                }
                Err(error) => tracing::warn!(%error, "consumer error; continuing"),
            },
            Some(acknowledged) = in_flight.next() => reader.commit(&consumer, Some(acknowledged?), CommitMode::Async),
            _ = snapshots.tick() => checkpoint(&stage, &consumer, &mut reader, &mut in_flight).await?,
            _ = shutdown.recv() => {
                tracing::info!("shutting down: committing and writing the snapshot");
                return checkpoint(&stage, &consumer, &mut reader, &mut in_flight).await;
            }
        }
    }
}

/// Waits for everything sent, commits, and writes the snapshot at the next offset.
async fn checkpoint<S: AcknowledgedStage>(
    stage: &S,
    consumer: &StreamConsumer,
    reader: &mut PartitionReader,
    in_flight: &mut FuturesOrdered<InFlight>,
) -> anyhow::Result<()> {
    let mut last = None;
    while let Some(acknowledged) = in_flight.next().await {
        last = Some(acknowledged?);
    }
    if let Some(offset) = last {
        reader.commit(consumer, Some(offset), CommitMode::Sync);
    }
    reader.snapshot(stage.state())
}

/// Resolves to `next_offset` once every one of `deliveries` is acknowledged; fails when the
/// brokers refused one.
async fn acknowledged(deliveries: Vec<DeliveryFuture>, next_offset: i64) -> anyhow::Result<i64> {
    let outcomes = try_join_all(deliveries).await.map_err(|_| anyhow::anyhow!("the producer dropped a message"))?;
    match outcomes.into_iter().find_map(Result::err) {
        None => Ok(next_offset),
        Some((error, _)) => Err(anyhow::Error::new(error).context("the brokers refused a message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    /// The offset `group` has committed on `topic`/0, asked of the brokers.
    fn committed(brokers: &str, group: &str, topic: &str) -> Option<i64> {
        let consumer: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, 0);
        let found = consumer.committed_offsets(list, METADATA_TIMEOUT).unwrap();
        found.find_partition(topic, 0).and_then(|entry| entry.offset().to_raw()).filter(|offset| *offset >= 0)
    }

    #[tokio::test]
    async fn a_stage_catching_up_below_its_groups_commit_never_moves_the_commit_back() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("echotrace.gate", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let producer: ThreadedProducer<DefaultProducerContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        for _ in 0..10 {
            producer.send(BaseRecord::<(), str>::to("echotrace.gate").partition(0).payload("m")).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        let config = Config {
            kafka: crate::config::KafkaConfig { brokers: brokers.clone(), ..Default::default() },
            ..Default::default()
        };
        // An earlier life committed offset 8; this one has no snapshot and reads from the beginning.
        let open = || {
            PartitionReader::open::<u8>(
                &config,
                "gate-group",
                ("echotrace.gate", 0),
                None,
                PartitionStage::PagingGate,
                Arc::new(Metrics::new()),
            )
            .unwrap()
        };
        let (consumer, reader, _) = open();
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("echotrace.gate", 0, Offset::Offset(8)).unwrap();
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
        drop((consumer, reader));
        let (consumer, mut reader, restored) = open();
        assert!(restored.is_none());
        assert_eq!((reader.start(), reader.committed()), (None, 8));

        let mut again = Vec::new();
        for _ in 0..3 {
            let message = consumer.recv().await.unwrap();
            again.push(reader.take(&message));
        }
        assert_eq!(again, [true, true, true], "below the commit: taken by an earlier life");
        reader.commit(&consumer, None, CommitMode::Sync);
        assert_eq!(committed(&brokers, "gate-group", "echotrace.gate"), Some(8), "not moved back to 3");
        for _ in 3..10 {
            let message = consumer.recv().await.unwrap();
            reader.take(&message);
        }
        reader.commit(&consumer, None, CommitMode::Sync);
        assert_eq!(committed(&brokers, "gate-group", "echotrace.gate"), Some(10));
    }
}
