//! The `score` stage (`stage.role = "score"`): one owner of cascades, out of the `detect` process,
//! fed the scorer's records over Kafka.
//!
//! With `stage.score_stage`, the `detect` process keeps only the scorer's router
//! ([`echotrace_core::score::router`]): after each batch it sends every owner one
//! [`OwnerMessage::Records`] on the owner's partition of `kafka.owner_topic` (the records of its
//! cascades, none or many, and the number of the batch's last post). Owner `stage.score_owner` of
//! `alerting.cascade_owners` reads that partition, assigned rather than subscribed, in the
//! consumer group `<kafka.group_id>-score-<n>`. It processes its records in order
//! ([`CascadeOwner::receive`]); a merge of one of its cascades into another owner's sends a
//! [`OwnerMessage::Handover`] to that owner's partition, and a record waiting for a handover
//! holds the records after it until the handover comes. After each message it sends its alert
//! events and how far it is through to the `gate` stage ([`GateMessage`] on `kafka.gate_topic`).
//! A message that is not an owner message goes to the dead-letter topic with its reason, and the
//! owner goes on.
//!
//! **Durable state.** As a linking shard's ([`super::link`]): the offset is committed once what
//! the messages before it sent is acknowledged; every `state.snapshot_interval_secs`, and on the
//! way out, the owner waits for what it sent, commits, and writes its snapshot
//! (`state.dir/score-owner-<n>.bin`) with the next offset. An owner that starts again reads its
//! partition from its snapshot (from the beginning without one) and takes the messages before
//! its committed offset without sending: its state is a function of its partition's messages in
//! order. What it sent after the last commit it sends again; the gate and the other owners pass
//! the copies over by post number.

use super::probes;
use crate::config::Config;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::stages::InvalidInput;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::score::ScorerStats;
use echotrace_core::score::gate::GateEntry;
use echotrace_core::score::owner::{CascadeOwner, Handover, Lifecycle, OwnerOutput};
use echotrace_core::score::router::OwnerRecord;
use echotrace_core::state::{PartitionSnapshot, PartitionStage, Position};
use futures::StreamExt;
use futures::future::try_join_all;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long start-up waits for the brokers' metadata and the committed offset.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A message on an owner's partition of `kafka.owner_topic`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OwnerMessage {
    /// The router's records for this owner from one batch of posts, and the number of the batch's
    /// last post: every record of the posts up to it is in this message or came before.
    Records {
        /// The number of the batch's last post.
        through: u64,
        /// The records, in order.
        records: Vec<OwnerRecord>,
    },
    /// A handover from the owner of a cascade merged into one of this owner's.
    Handover(Box<Handover>),
}

/// A message on `kafka.gate_topic`: what one owner made of one message it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateMessage {
    /// The owner.
    pub owner: u32,
    /// The number of the last post whose records the owner has all processed.
    pub through: u64,
    /// Its alert events, tagged with post and step.
    pub entries: Vec<GateEntry>,
}

/// The consumer group of owner `stage.score_owner`: `kafka.group_id` with `-score-<n>` appended.
pub fn group_id(config: &Config) -> String {
    format!("{}-score-{}", config.kafka.group_id, config.stage.score_owner)
}

/// Checks that `kafka.owner_topic` has one partition per owner and `kafka.gate_topic` one.
pub fn check_partitions(publisher: &KafkaPublisher, config: &Config) -> anyhow::Result<()> {
    let owners = config.alerting.cascade_owners.max(1);
    let partitions = publisher.partitions(&config.kafka.owner_topic, METADATA_TIMEOUT)?;
    anyhow::ensure!(
        partitions == owners as i32,
        "kafka.owner_topic {} has {partitions} partitions: it needs one per owner of cascades \
         (alerting.cascade_owners = {owners})",
        config.kafka.owner_topic
    );
    let gate = publisher.partitions(&config.kafka.gate_topic, METADATA_TIMEOUT)?;
    anyhow::ensure!(
        gate == 1,
        "kafka.gate_topic {} has {gate} partitions: it needs exactly 1, the one gate every owner's events go through",
        config.kafka.gate_topic
    );
    Ok(())
}

/// The `detect` stage's side: the scorer's records of a batch sent to their owners.
pub struct OwnerRecords {
    topic: String,
    owners: usize,
}

impl OwnerRecords {
    /// Records for the owners of `config`, on `kafka.owner_topic`.
    pub fn new(config: &Config) -> OwnerRecords {
        OwnerRecords { topic: config.kafka.owner_topic.clone(), owners: config.alerting.cascade_owners.max(1) }
    }

    /// Sends every owner its records of a batch (none for some), with the number of the batch's
    /// last post, so that each owner, and the gate after them, knows it has had them all.
    pub fn send(
        &self,
        publisher: &KafkaPublisher,
        records: Vec<(usize, OwnerRecord)>,
    ) -> Result<Vec<DeliveryFuture>, KafkaError> {
        let Some(through) = records.iter().map(|(_, record)| record.seq).max() else { return Ok(Vec::new()) };
        let mut by_owner: Vec<Vec<OwnerRecord>> = vec![Vec::new(); self.owners];
        for (owner, record) in records {
            by_owner[owner].push(record);
        }
        by_owner
            .into_iter()
            .enumerate()
            .map(|(owner, records)| {
                let message = probes::encode(&OwnerMessage::Records { through, records });
                publisher.exchange(&self.topic, owner as i32, &message)
            })
            .collect()
    }
}

/// An owner process that has started: its probes' address and the handles to wait on.
pub struct Running {
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub api_address: SocketAddr,
    /// The consumer loop; resolves when it has committed and written its last snapshot.
    pub consumer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The HTTP server task.
    pub server: tokio::task::JoinHandle<()>,
}

/// Starts the owner: restores it, assigns its partition, and takes its messages until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let owners = config.alerting.cascade_owners.max(1);
    let index = config.stage.score_owner;
    anyhow::ensure!(
        (index as usize) < owners,
        "stage.score_owner = {index} names no owner of alerting.cascade_owners = {owners}"
    );
    let lifecycle = Lifecycle::new(config.alerting.rules()?, &config.alerting.score_config());
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let (api_address, server) =
        http::serve_health(config.http.listen, health, config.http.token()?, shutdown.clone()).await?;
    let publisher = KafkaPublisher::for_round_trips(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    check_partitions(&publisher, &config)?;

    let store = StateStore::for_owner(&config).context("cannot create the state folder (state.dir)")?;
    let (mut owner, start) = restore(store.as_ref());
    owner.keep_rules(&lifecycle.rules);
    let group = group_id(&config);
    let consumer: StreamConsumer = crate::ingest::client_config(
        &config,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", probes::FETCH_WAIT_MS),
        ],
    )
    .create()
    .map_err(crate::config::without_secret)
    .context("cannot create the Kafka consumer")?;
    let topic = config.kafka.owner_topic.clone();
    let committed = committed_offset(&consumer, &topic, index as i32)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, index as i32, start.map_or(Offset::Beginning, Offset::Offset))?;
    consumer.assign(&assignment)?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(brokers = %config.kafka.brokers, group = %group, owner = index, owners, owner_topic = %topic, gate_topic = %config.kafka.gate_topic, from = ?start, sent_before = committed, api = %api_address, "owner of cascades taking its records");
    let stage = Stage {
        config,
        lifecycle,
        publisher,
        store,
        metrics,
        owner,
        index,
        owners,
        committed,
        next_offset: start.unwrap_or(0),
        snapshot_offset: start,
    };
    let consumer = tokio::spawn(stage.consume(consumer, shutdown));
    Ok(Running { api_address, consumer, server })
}

/// The offset the group `consumer` is in committed for `topic`'s `partition` (0 when none).
pub fn committed_offset(consumer: &StreamConsumer, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    Ok(consumer
        .committed_offsets(list, METADATA_TIMEOUT)
        .with_context(|| format!("cannot read the committed offset of {topic}/{partition}"))?
        .find_partition(topic, partition)
        .and_then(|found| match found.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
        .unwrap_or(0))
}

/// The owner in its snapshot and the offset it was taken at, or an empty owner read from the
/// beginning (`None`). A snapshot that cannot be used is set aside with the reason.
fn restore(store: Option<&StateStore>) -> (CascadeOwner, Option<i64>) {
    let Some(store) = store else { return (CascadeOwner::default(), None) };
    match store.read_partition::<CascadeOwner>(PartitionStage::CascadeOwner) {
        Ok(Some(snapshot)) => {
            tracing::info!(snapshot = %store.path().display(), cascades = snapshot.state.tracked_cascades(), offset = snapshot.position.offset, "owner of cascades restored");
            (snapshot.state, Some(snapshot.position.offset))
        }
        Ok(None) => (CascadeOwner::default(), None),
        Err(error) => {
            let aside = store.path().with_extension("refused");
            let moved = std::fs::rename(store.path(), &aside).is_ok();
            tracing::warn!(snapshot = %store.path().display(), %error, set_aside = moved, "owner snapshot refused: reading the owner topic from its beginning");
            (CascadeOwner::default(), None)
        }
    }
}

/// One owner of cascades and where it stands on its partition.
struct Stage {
    config: Config,
    lifecycle: Lifecycle,
    publisher: KafkaPublisher,
    store: Option<StateStore>,
    metrics: Arc<Metrics>,
    owner: CascadeOwner,
    index: u32,
    owners: usize,
    /// The committed offset at start-up: what the messages before it made was sent by an earlier
    /// life.
    committed: i64,
    /// The offset after the last message taken.
    next_offset: i64,
    /// The offset of the last snapshot written.
    snapshot_offset: Option<i64>,
}

/// What was sent for a message (its gate message and handovers, or its dead letter), and the
/// offset to commit once it is acknowledged.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<i64>> + Send>>;

impl Stage {
    /// Takes messages until `shutdown` fires; then commits and writes a last snapshot.
    async fn consume(mut self, consumer: StreamConsumer, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut snapshots = tokio::time::interval(self.config.state.snapshot_interval());
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = consumer.recv() => match message {
                    Ok(message) => {
                        if let Some(sent) = self.take(&message)? {
                            in_flight.push_back(sent);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "consumer error; continuing"),
                },
                Some(acknowledged) = in_flight.next() => self.commit(&consumer, acknowledged?, CommitMode::Async),
                _ = snapshots.tick() => self.checkpoint(&consumer, &mut in_flight).await?,
                _ = shutdown.recv() => {
                    tracing::info!("shutting down: committing and writing the owner's snapshot");
                    return self.checkpoint(&consumer, &mut in_flight).await;
                }
            }
        }
    }

    /// Takes one message of the owner topic: processes its records or handover, and returns the
    /// sending of what that made (none while catching up); a message that is not an owner message
    /// is dead-lettered.
    fn take(&mut self, message: &BorrowedMessage<'_>) -> anyhow::Result<Option<InFlight>> {
        self.metrics.messages_consumed.inc();
        let offset = message.offset();
        self.next_offset = offset + 1;
        let payload = message.payload().unwrap_or_default();
        let output = match probes::decode::<OwnerMessage>(payload, "owner message") {
            Ok(OwnerMessage::Records { through, records }) => self.owner.receive(&self.lifecycle, through, records),
            Ok(OwnerMessage::Handover(handover)) => self.owner.receive_handover(&self.lifecycle, *handover),
            // Dead-lettered by an earlier life.
            Err(_) if offset < self.committed => return Ok(None),
            Err(error) => {
                let error = InvalidInput::Exchange(error);
                let source = Source { topic: message.topic().to_owned(), partition: message.partition(), offset };
                tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, offset), kind = error.kind(), %error, "dead-lettering message");
                self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
                let delivery = self.publisher.dead_letter(message.key(), payload, &source, &error)?;
                return Ok(Some(Box::pin(acknowledged(vec![delivery], offset + 1))));
            }
        };
        self.metrics.observe_scorer(ScorerStats {
            forgotten_early: self.owner.forgotten_early(),
            tracked_cascades: self.owner.tracked_cascades(),
        });
        if offset < self.committed {
            return Ok(None);
        }
        let deliveries = self.send(output)?;
        Ok(Some(Box::pin(acknowledged(deliveries, offset + 1))))
    }

    /// Sends what the owner made: its handovers to the survivors' owners, its events to the gate.
    fn send(&self, output: OwnerOutput) -> anyhow::Result<Vec<DeliveryFuture>> {
        let OwnerOutput { through, entries, handovers } = output;
        let mut deliveries = Vec::with_capacity(handovers.len() + 1);
        for handover in handovers {
            let to = handover.into.partition(self.owners) as i32;
            let message = probes::encode(&OwnerMessage::Handover(Box::new(handover)));
            deliveries.push(self.publisher.exchange(&self.config.kafka.owner_topic, to, &message)?);
        }
        let message = probes::encode(&GateMessage { owner: self.index, through, entries });
        deliveries.push(self.publisher.exchange(&self.config.kafka.gate_topic, 0, &message)?);
        Ok(deliveries)
    }

    /// Commits the owner topic's offset `offset`, below which everything sent is acknowledged.
    fn commit(&self, consumer: &StreamConsumer, offset: i64, mode: CommitMode) {
        let mut offsets = TopicPartitionList::new();
        let _ = offsets.add_partition_offset(&self.config.kafka.owner_topic, self.index as i32, Offset::Offset(offset));
        match consumer.commit(&offsets, mode) {
            Ok(()) => self.metrics.checkpoints.inc(),
            Err(error) => {
                // The next commit carries this offset's successor; until then a restart sends a
                // little again, which the gate and the other owners pass over.
                tracing::warn!(%error, "offset commit failed");
                self.metrics.commit_failures.inc();
            }
        }
    }

    /// Waits for everything sent, commits, and writes the owner's snapshot at the next offset.
    async fn checkpoint(
        &mut self,
        consumer: &StreamConsumer,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> anyhow::Result<()> {
        let mut last = None;
        while let Some(acknowledged) = in_flight.next().await {
            last = Some(acknowledged?);
        }
        if let Some(offset) = last {
            self.commit(consumer, offset, CommitMode::Sync);
        }
        let Some(store) = self.store.as_ref().filter(|_| self.snapshot_offset != Some(self.next_offset)) else {
            return Ok(());
        };
        let started = Instant::now();
        let position = Position {
            source: self.config.kafka.owner_topic.clone(),
            partition: self.index as i32,
            offset: self.next_offset,
        };
        let bytes =
            store.write_partition(PartitionStage::CascadeOwner, &PartitionSnapshot { state: &self.owner, position })?;
        self.metrics.observe_snapshot_written(bytes, started.elapsed());
        self.snapshot_offset = Some(self.next_offset);
        Ok(())
    }
}

/// Resolves to `next_offset` once every one of `deliveries` is acknowledged; fails when the
/// brokers refused one.
async fn acknowledged(deliveries: Vec<DeliveryFuture>, next_offset: i64) -> anyhow::Result<i64> {
    let outcomes = try_join_all(deliveries).await.map_err(|_| anyhow::anyhow!("the producer dropped a message"))?;
    match outcomes.into_iter().find_map(Result::err) {
        None => Ok(next_offset),
        Some((error, _)) => Err(anyhow::Error::new(error).context("the brokers refused a message of the owner")),
    }
}
