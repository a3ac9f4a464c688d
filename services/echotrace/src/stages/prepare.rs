//! The `prepare` stage (`stage.role = "prepare"`): posts in, prepared posts out.
//!
//! A consumer in the group `<kafka.group_id>-prepare` reads `kafka.input_topics`. Each message is
//! decoded and validated; a bad one goes to the dead-letter topic with its reason, as in the
//! one-process mode. Good posts wait in a batch of `embed.batch_size` (or until the oldest has
//! waited `embed.batch_latency_ms`); the batch is prepared across `embed.threads` threads
//! ([`Preparer::prepare_all`]), the posts that may be linked by meaning are embedded, and each
//! goes to `kafka.prepared_topic` ([`super::prepared`]):
//!
//! - keyed by post id, on the partition number it was read from (modulo the prepared topic's
//!   partitions), so each input partition's order is kept for the `detect` stage;
//! - with the input message's timestamp, so the `detect` stage measures alert latency from when
//!   the post was first produced.
//!
//! Every `stage.idle_marker_interval_ms` the stage sends what waits and awaits the
//! acknowledgement of every batch sent, then asks the brokers which of its input partitions it has
//! read to their end ([`PartitionEnds::read_to_end`]) and sends an **idle marker** for each, to
//! the same prepared partition, after the posts read before: the `detect` stage orders posts
//! across input partitions and waits for each, and an idle one must not hold the others back
//! ([`crate::ingest::ordering`]). The marker carries the time the brokers were asked: every
//! message of the partition appended before it has been read, and sent before the marker.
//!
//! The input offsets of a batch are committed only after every prepared post and dead letter of it
//! is acknowledged by the brokers, in the order the batches were sent; meanwhile the next batches
//! are read, prepared and sent. A post the brokers refuse for good stops the producer before any
//! later one goes through ([`KafkaPublisher::keeping_order`]), and the stage with it: each
//! prepared partition keeps its input partition's order. A crash re-reads what was not
//! committed, and the re-prepared posts reach the `detect` stage twice; it drops the second copy
//! by post id, as the one-process mode drops a re-read post. When the group revokes partitions, what waits of them is dropped
//! unsent: their next owner, perhaps this member again, reads it from the commit.

use super::prepared::{self, PreparedSettings};
use crate::config::Config;
use crate::embed::Embedder;
use crate::embed::cached::CachedEmbedder;
use crate::http::{self, Health};
use crate::ingest::lag::{Partition, PartitionEnds, READ_TO_END_TIMEOUT};
use crate::metrics::Metrics;
use crate::pipeline::embed_counted;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::stages::{InvalidInput, Running};
use anyhow::Context;
use chrono::Utc;
use echotrace_core::post::Post;
use echotrace_core::prepare::Preparer;
use echotrace_core::stage::Stage as _;
use futures::StreamExt;
use futures::future::try_join_all;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long start-up waits for the prepared topic's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer group of the `prepare` stage for a configuration: `kafka.group_id` with
/// `-prepare` appended, so both stages can share one configuration.
pub fn group_id(config: &Config) -> String {
    format!("{}-prepare", config.kafka.group_id)
}

/// Marks the stage ready once the group has given it its partitions (none, where the stage has
/// more instances than the input has partitions: it waits as a standby), and keeps the partitions
/// revoked since the consumer loop last looked.
struct GroupContext {
    ready: Arc<AtomicBool>,
    revoked: Mutex<Vec<Partition>>,
}

impl GroupContext {
    /// The partitions revoked since the last call.
    fn take_revoked(&self) -> Vec<Partition> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked lock poisoned"))
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned");
                self.ready.store(true, Ordering::Relaxed);
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions revoked");
                let revoked: Vec<Partition> =
                    partitions.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                self.revoked.lock().expect("revoked lock poisoned").extend(revoked);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// A valid post waiting for its batch, with where it came from.
struct Waiting {
    post: Post,
    source: Partition,
    timestamp: Option<i64>,
}

/// How many sent batches may await their acknowledgements while the stage reads on.
const MAX_BATCHES_IN_FLIGHT: usize = 16;

/// A sent batch, once every delivery of it is acknowledged.
type Acknowledged = Pin<Box<dyn Future<Output = anyhow::Result<Sent>> + Send>>;

/// What an acknowledged batch leaves to do: commit its offsets, count its posts.
struct Sent {
    /// The next offset of every partition the batch read.
    positions: BTreeMap<Partition, i64>,
    /// Its valid posts.
    posts: u64,
}

/// The batch being read: the posts waiting, the dead letters sent, and the offsets to commit
/// once both are acknowledged.
struct Batch {
    posts: Vec<Waiting>,
    deliveries: Vec<DeliveryFuture>,
    /// The next offset of every partition read since the last commit.
    positions: BTreeMap<Partition, i64>,
    /// When the first message since the last commit was read.
    oldest_since: Option<Instant>,
}

impl Batch {
    /// Drops what waits of the partitions the group revoked since the last call, with their
    /// positions: their next owner reads them again from the commit.
    fn forget_revoked(&mut self, consumer: &StreamConsumer<GroupContext>) {
        let revoked = consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        self.posts.retain(|waiting| !revoked.contains(&waiting.source));
        self.positions.retain(|partition, _| !revoked.contains(partition));
    }
}

/// What a batch is prepared with and sent through.
struct Stage {
    config: Config,
    preparer: Preparer,
    embedder: Option<CachedEmbedder>,
    settings: PreparedSettings,
    publisher: KafkaPublisher,
    prepared_partitions: i32,
    metrics: Arc<Metrics>,
    threads: usize,
    /// Where input partitions end, for the idle markers.
    ends: Arc<PartitionEnds>,
}

/// Starts the probes and the consumer loop; both stop when `shutdown` fires. Fails at start-up
/// when the model cannot be loaded or a topic it writes is missing.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let (api_address, server) =
        http::serve_health(config.http.listen, health, config.http.token()?, shutdown.clone()).await?;
    let embedder = if config.detector.semantic.enabled {
        let embedder = Embedder::new(&config.embed).context("semantic linking is on (detector.semantic.enabled)")?;
        tracing::info!(model = %config.embed.model_file, dimension = embedder.dimension(), device = ?embedder.device(), "sentence embeddings loaded");
        Some(CachedEmbedder::new(embedder, config.embed.cache_entries))
    } else {
        None
    };
    let settings = PreparedSettings::of(&config);
    tracing::info!(settings = %settings.description, hash = %settings.hash, "preparing with these settings");
    let publisher = KafkaPublisher::keeping_order(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    let prepared_partitions = publisher.partitions(&config.kafka.prepared_topic, METADATA_TIMEOUT)?;
    let group = group_id(&config);
    let consumer: StreamConsumer<GroupContext> =
        crate::ingest::client_config(&config, &[("group.id", group.as_str()), ("auto.offset.reset", "earliest")])
            .create_with_context(GroupContext { ready, revoked: Mutex::new(Vec::new()) })
            .map_err(crate::config::without_secret)
            .context("cannot create the Kafka consumer")?;
    let topics: Vec<&str> = config.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(brokers = %config.kafka.brokers, group = %group, topics = ?topics, prepared_topic = %config.kafka.prepared_topic, prepared_partitions, api = %api_address, "preparing");
    let ends = PartitionEnds::new(&config, &group, READ_TO_END_TIMEOUT)
        .context("cannot create the Kafka client for partition ends")?;
    let stage = Stage {
        preparer: Preparer::new(&config.detector),
        threads: crate::embed::threads_or_cores(config.embed.threads),
        config,
        embedder,
        settings,
        publisher,
        prepared_partitions,
        metrics,
        ends,
    };
    let consumer = tokio::spawn(consume(stage, consumer, shutdown));
    Ok(Running { api_address, consumer, server })
}

/// Reads, prepares and sends until `shutdown` fires; then sends and commits what it read.
///
/// A sent batch's acknowledgements are awaited while the next batches are read, prepared and
/// sent (at most [`MAX_BATCHES_IN_FLIGHT`] at once), and its offsets committed when they come, in
/// the order the batches were sent: awaiting each batch before reading on held one preparer to one
/// batch per producer linger and round trip (3,030 posts/s in `staged-throughput` with 32-post
/// batches, whatever the cores).
async fn consume(
    mut stage: Stage,
    consumer: StreamConsumer<GroupContext>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut batch = Batch { posts: Vec::new(), deliveries: Vec::new(), positions: BTreeMap::new(), oldest_since: None };
    let mut in_flight: FuturesOrdered<Acknowledged> = FuturesOrdered::new();
    let latency = Duration::from_millis(stage.config.embed.batch_latency_ms);
    let batch_size = stage.config.embed.batch_size.max(1);
    let mut idle_markers =
        tokio::time::interval(Duration::from_millis(stage.config.stage.idle_marker_interval_ms.max(1)));
    idle_markers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = batch.oldest_since.map(|since| since + latency);
        tokio::select! {
            message = consumer.recv(), if in_flight.len() < MAX_BATCHES_IN_FLIGHT => {
                match message {
                    Ok(message) => stage.read(&consumer, &message, &mut batch)?,
                    Err(error) => tracing::warn!(%error, "consumer error; continuing"),
                }
                if batch.posts.len() >= batch_size {
                    in_flight.extend(stage.send(&consumer, &mut batch)?);
                }
            }
            Some(acknowledged) = in_flight.next() => stage.commit(&consumer, acknowledged?, CommitMode::Async),
            _ = crate::ingest::until(deadline) => in_flight.extend(stage.send(&consumer, &mut batch)?),
            _ = idle_markers.tick() => {
                // The markers go after everything read is acknowledged.
                in_flight.extend(stage.send(&consumer, &mut batch)?);
                while let Some(acknowledged) = in_flight.next().await {
                    stage.commit(&consumer, acknowledged?, CommitMode::Async);
                }
                stage.send_idle_markers(&consumer).await?;
            }
            _ = shutdown.recv() => {
                tracing::info!("shutting down: sending and committing what was read");
                in_flight.extend(stage.send(&consumer, &mut batch)?);
                let mut all = Sent { positions: BTreeMap::new(), posts: 0 };
                while let Some(acknowledged) = in_flight.next().await {
                    let acknowledged = acknowledged?;
                    all.positions.extend(acknowledged.positions);
                    all.posts += acknowledged.posts;
                }
                stage.commit(&consumer, all, CommitMode::Sync);
                return Ok(());
            }
        }
    }
}

impl Stage {
    /// Takes one message: a post waits for the batch, anything else goes to the dead-letter topic.
    fn read(
        &self,
        consumer: &StreamConsumer<GroupContext>,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> anyhow::Result<()> {
        batch.forget_revoked(consumer);
        self.metrics.messages_consumed.inc();
        let payload = message.payload().unwrap_or_default();
        match Post::from_json(payload) {
            Ok(post) => batch.posts.push(Waiting {
                post,
                source: (message.topic().to_owned(), message.partition()),
                timestamp: message.timestamp().to_millis(),
            }),
            Err(error) => {
                let error = InvalidInput::Post(error);
                let source = Source {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, source.offset), kind = error.kind(), %error, "dead-lettering message");
                self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
                batch.deliveries.push(self.publisher.dead_letter(message.key(), payload, &source, &error)?);
            }
        }
        batch.positions.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
        batch.oldest_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Asks the brokers which input partitions this member has read to their end, and sends an
    /// idle marker for each to the prepared partition its posts go to, after them (everything
    /// read was sent and acknowledged first). A marker that is not delivered is logged; the next
    /// one says as much, later.
    async fn send_idle_markers(&self, consumer: &StreamConsumer<GroupContext>) -> anyhow::Result<()> {
        let read_to_end = self.ends.read_to_end(consumer).await;
        let mut deliveries = Vec::new();
        for source in &read_to_end.partitions {
            let key = format!("{}/{}", source.0, source.1);
            deliveries.push(self.publisher.prepared(
                &self.config.kafka.prepared_topic,
                source.1 % self.prepared_partitions,
                &key,
                &prepared::encode_idle(source, read_to_end.at),
                Some(Utc::now().timestamp_millis()),
            )?);
        }
        for delivery in try_join_all(deliveries).await.context("the producer stopped")? {
            match delivery {
                Ok(_) => self.metrics.idle_markers.inc(),
                Err((error, _)) => tracing::warn!(%error, "an idle marker was not delivered"),
            }
        }
        Ok(())
    }

    /// Prepares and embeds the waiting posts and sends them; returns what resolves once every
    /// delivery of the batch (its prepared posts and dead letters) is acknowledged, with the
    /// offsets to commit then, or `None` when nothing was read since the last batch. A delivery
    /// that fails stops the stage without committing: its replacement reads the batch again.
    fn send(
        &mut self,
        consumer: &StreamConsumer<GroupContext>,
        batch: &mut Batch,
    ) -> anyhow::Result<Option<Acknowledged>> {
        batch.forget_revoked(consumer);
        batch.oldest_since = None;
        let waiting = std::mem::take(&mut batch.posts);
        let posts = waiting.len() as u64;
        if !waiting.is_empty() {
            let (posts, origins): (Vec<Post>, Vec<(Partition, Option<i64>)>) =
                waiting.into_iter().map(|waiting| (waiting.post, (waiting.source, waiting.timestamp))).unzip();
            let prepared = self.preparer.process(posts, self.threads);
            let embeddings = match &mut self.embedder {
                Some(embedder) => {
                    let keys: Vec<(Option<u64>, &str)> =
                        prepared.iter().map(|prepared| (prepared.embedding_key, prepared.post.text.as_str())).collect();
                    // A failed batch is sent without embeddings: the `detect` stage links it by
                    // everything but meaning, as the one-process mode does.
                    embed_counted(embedder, &keys, &self.metrics)
                }
                None => vec![None; prepared.len()],
            };
            for ((prepared, embedding), (source, timestamp)) in prepared.iter().zip(&embeddings).zip(origins) {
                let payload = prepared::encode(prepared, embedding.as_deref(), &self.settings, &source);
                let delivery = self
                    .publisher
                    .prepared(
                        &self.config.kafka.prepared_topic,
                        source.1 % self.prepared_partitions,
                        &prepared.post.id,
                        &payload,
                        timestamp,
                    )
                    .context("a prepared post was not sent; offsets not committed")?;
                batch.deliveries.push(delivery);
            }
        }
        if batch.positions.is_empty() && batch.deliveries.is_empty() {
            return Ok(None);
        }
        let deliveries = std::mem::take(&mut batch.deliveries);
        let positions = std::mem::take(&mut batch.positions);
        Ok(Some(Box::pin(async move {
            for delivery in try_join_all(deliveries).await.context("the producer stopped")? {
                if let Err((error, _)) = delivery {
                    anyhow::bail!("a prepared post or dead letter was not delivered ({error}); offsets not committed");
                }
            }
            Ok(Sent { positions, posts })
        })))
    }

    /// Commits the offsets of an acknowledged batch, of the partitions this member still owns.
    fn commit(&self, consumer: &StreamConsumer<GroupContext>, acknowledged: Sent, mode: CommitMode) {
        self.metrics.posts_prepared.inc_by(acknowledged.posts);
        let positions = acknowledged.positions;
        let owned = consumer.assignment().unwrap_or_default();
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in positions {
            if owned.find_partition(&topic, partition).is_some() {
                let _ = offsets.add_partition_offset(&topic, partition, Offset::Offset(offset));
            }
        }
        if offsets.count() == 0 {
            return;
        }
        match consumer.commit(&offsets, mode) {
            Ok(()) => self.metrics.checkpoints.inc(),
            Err(error) => {
                // The next batch's commit carries these offsets' successors; until then a
                // restart re-reads a little, which the `detect` stage drops by post id.
                tracing::warn!(%error, "offset commit failed");
                self.metrics.commit_failures.inc();
            }
        }
    }
}
