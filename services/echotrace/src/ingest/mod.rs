//! Ingest: the Kafka consumer loop that `run` and `demo` share.
//!
//! A `StreamConsumer` in a consumer group reads posts. Each message is decoded and validated
//! ([`Post::from_json`]); a bad one goes to the dead-letter topic with its reason and original bytes,
//! and the loop goes on. A good one goes through the [`Pipeline`]. Offsets are kept in memory and
//! committed only at a checkpoint: after the Parquet flush has made every buffered row durable and
//! every dead letter and edge sent since the last checkpoint has been acknowledged by the brokers.
//!
//! With state snapshots on (`state.dir`), a checkpoint commits only when it has also written a
//! snapshot of the detector and the scorer, at most every `state.snapshot_interval_secs`: the
//! snapshot first, then the offsets it reflects, so the committed offsets never run ahead of the
//! state a restart resumes from. Between snapshots, checkpoints still flush rows for readers.
//!
//! A crash re-reads the messages since the last commit (at-least-once): with a snapshot restored,
//! the detector recognizes the posts it already holds and drops them; without one, readers of the
//! datasets and `echotrace compact` deduplicate by `post_id`. Offsets are committed only for the
//! partitions this member owns at the time, and only where they are ahead of the group's committed
//! offset: a partition that went to another member in a rebalance and came back never has its
//! offset moved back over that member's progress.

pub mod lag;
pub mod rebuild;

use crate::alerting::AlertNotice;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Processed};
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::state::{StateError, StateStore};
use chrono::DateTime;
use echotrace_core::post::Post;
use echotrace_core::state::Position;
use futures::future::try_join_all;
use lag::{LagContext, Ownership, Partition};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::DeliveryFuture;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The Kafka client failed in a way retrying cannot fix.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A dead letter or edge was not acknowledged; offsets were not committed.
    #[error("a produced message was not delivered ({0}); offsets not committed, the messages will be re-read")]
    Delivery(String),
    /// The Parquet sink failed; offsets were not committed.
    #[error(transparent)]
    Sink(#[from] crate::sinks::parquet::SinkError),
    /// The state snapshot could not be written; offsets were not committed.
    #[error("cannot write the state snapshot: {0}")]
    State(#[from] StateError),
}

/// The settings every consumer of the input shares: the group (offsets are committed by hand, at
/// checkpoints), fetch sizes that let oversized messages through to be dead-lettered rather
/// than stall their partition, then `extra`, then the configured properties, which win.
fn client_config(config: &Config, extra: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.message.max.bytes", "16777216")
        .set("fetch.max.bytes", "33554432")
        .set("receive.message.max.bytes", "41943040");
    for (key, value) in extra {
        client.set(*key, *value);
    }
    for (key, value) in &config.kafka.properties {
        client.set(key, value);
    }
    client
}

/// Creates the group consumer with the configured properties.
pub fn consumer(
    config: &Config,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    ownership: Arc<Mutex<Ownership>>,
) -> Result<StreamConsumer<LagContext>, KafkaError> {
    let client = client_config(config, &[("auto.offset.reset", "earliest"), ("statistics.interval.ms", "5000")]);
    let consumer: StreamConsumer<LagContext> =
        client.create_with_context(LagContext::new(metrics, ready, ownership))?;
    let topics: Vec<&str> = config.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Where the consumer loop reports to and what it keeps: the sinks beyond Parquet, the snapshot
/// file, and the partitions it owns.
pub struct Outlets<'a> {
    /// Dead letters, edges and alert events to Kafka.
    pub publisher: &'a KafkaPublisher,
    /// Alert events to the Alertmanager dispatcher, when one runs.
    pub alert_notices: Option<&'a mpsc::Sender<AlertNotice>>,
    /// The snapshot file, when state snapshots are on.
    pub state: Option<&'a StateStore>,
    /// The partitions this member owns (kept by the consumer's rebalance callbacks).
    pub ownership: &'a Mutex<Ownership>,
}

/// Consumes until `shutdown` fires, checkpointing every `output.flush_rows` posts or
/// `output.flush_interval_ms`; a last checkpoint, with a snapshot, is taken on the way out.
pub async fn consume(
    config: &Config,
    consumer: &StreamConsumer<LagContext>,
    outlets: Outlets<'_>,
    pipeline: &mut Pipeline,
    metrics: &Metrics,
    mut shutdown: Shutdown,
) -> Result<(), IngestError> {
    let mut checkpoint = Checkpoint::new(config.state.snapshot_interval());
    let mut ticker = tokio::time::interval(config.output.flush_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let to_rebuild = outlets.ownership.lock().expect("ownership lock poisoned").take_to_rebuild();
        if !to_rebuild.is_empty() {
            // What waits in the batch is processed and published before the sinks are muted.
            let processed = pipeline.run_batch();
            checkpoint.publish(processed, &outlets).await?;
            rebuild_assigned(config, consumer, pipeline, to_rebuild).await?;
        }
        tokio::select! {
            message = consumer.recv() => {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(%error, "consumer error; continuing");
                        continue;
                    }
                };
                let started = Instant::now();
                metrics.messages_consumed.inc();
                let source = Source { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
                let payload = message.payload().unwrap_or_default();
                match Post::from_json(payload) {
                    Ok(post) => {
                        let produced_at = message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis);
                        let processed = pipeline.submit(post, produced_at);
                        checkpoint.publish(processed, &outlets).await?;
                    }
                    Err(error) => {
                        tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, source.offset), kind = error.kind(), %error, "dead-lettering message");
                        metrics.dead_letters.with_label_values(&[error.kind()]).inc();
                        checkpoint.deliveries.push(outlets.publisher.dead_letter(message.key(), payload, &source, &error).await?);
                    }
                }
                checkpoint.positions.insert((source.topic, source.partition), source.offset + 1);
                checkpoint.dirty = true;
                metrics.processing_seconds.observe(started.elapsed().as_secs_f64());
                if pipeline.buffered_posts() >= config.output.flush_rows {
                    checkpoint.take(consumer, pipeline, &outlets, metrics, false).await?;
                }
            }
            _ = until(pipeline.batch_deadline()) => {
                let processed = pipeline.run_batch();
                checkpoint.publish(processed, &outlets).await?;
            }
            _ = ticker.tick() => checkpoint.take(consumer, pipeline, &outlets, metrics, false).await?,
            _ = shutdown.recv() => {
                tracing::info!("shutting down: taking a last checkpoint");
                return checkpoint.take(consumer, pipeline, &outlets, metrics, true).await;
            }
        }
    }
}

/// Rebuilds the window of partitions a rebalance assigned, then resumes them.
async fn rebuild_assigned(
    config: &Config,
    consumer: &StreamConsumer<LagContext>,
    pipeline: &mut Pipeline,
    partitions: std::collections::BTreeSet<Partition>,
) -> Result<(), IngestError> {
    let started = Instant::now();
    let rebuilt = rebuild::rebuild_window(config, pipeline, Some(&partitions)).await?;
    tracing::info!(
        partitions = ?partitions,
        posts = rebuilt.posts,
        complete = rebuilt.complete,
        seconds = started.elapsed().as_secs_f64(),
        "window of assigned partitions rebuilt from Kafka"
    );
    let mut resumed = TopicPartitionList::new();
    for (topic, partition) in &partitions {
        resumed.add_partition(topic, *partition);
    }
    consumer.resume(&resumed)?;
    consumer.context().rebuilt();
    Ok(())
}

/// How long a checkpoint waits for the group's committed offsets.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// What has been read, and what is due.
struct Checkpoint {
    /// The next offset of every partition read since this member started (kept across rebalances:
    /// a partition that comes back is committed only where this is ahead of the group).
    positions: BTreeMap<Partition, i64>,
    /// Whether anything was read since the last checkpoint.
    dirty: bool,
    /// Whether offsets were read that are not committed yet.
    uncommitted: bool,
    deliveries: Vec<DeliveryFuture>,
    snapshot_interval: Duration,
    last_snapshot: Instant,
}

/// Waits until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

impl Checkpoint {
    fn new(snapshot_interval: Duration) -> Checkpoint {
        Checkpoint {
            positions: BTreeMap::new(),
            dirty: false,
            uncommitted: false,
            deliveries: Vec::new(),
            snapshot_interval,
            last_snapshot: Instant::now(),
        }
    }

    /// Publishes what processed posts produced (edges and alerts to Kafka, alerts to the dispatcher)
    /// and keeps the deliveries to await at the checkpoint.
    async fn publish(&mut self, processed: Vec<Processed>, outlets: &Outlets<'_>) -> Result<(), IngestError> {
        for processed in processed {
            self.deliveries.extend(outlets.publisher.edges(&processed.edges).await?);
            self.deliveries.extend(outlets.publisher.alerts(&processed.alerts).await?);
            if let Some(notices) = outlets.alert_notices {
                for event in processed.alerts {
                    // A full channel waits: alerts slow the consumer down, never vanish.
                    let _ = notices.send(AlertNotice { event, produced_at: processed.produced_at }).await;
                }
            }
        }
        Ok(())
    }

    /// Runs the waiting embedding batch, flushes Parquet and awaits every delivery; then, without
    /// state snapshots, commits the offsets; with them, when one is due (or `last`), writes the
    /// snapshot and then commits the offsets it reflects. In that order.
    async fn take(
        &mut self,
        consumer: &StreamConsumer<LagContext>,
        pipeline: &mut Pipeline,
        outlets: &Outlets<'_>,
        metrics: &Metrics,
        last: bool,
    ) -> Result<(), IngestError> {
        if self.dirty {
            let processed = pipeline.run_batch();
            self.publish(processed, outlets).await?;
            pipeline.flush()?;
            let outcomes = try_join_all(self.deliveries.drain(..))
                .await
                .map_err(|_| IngestError::Delivery("the producer was dropped".into()))?;
            if let Some(Err((error, _))) = outcomes.into_iter().find(Result::is_err) {
                return Err(IngestError::Delivery(error.to_string()));
            }
            metrics.checkpoints.inc();
            self.dirty = false;
            self.uncommitted = true;
        }
        if !self.uncommitted {
            return Ok(());
        }
        let owned: Vec<(&Partition, &i64)> = {
            let ownership = outlets.ownership.lock().expect("ownership lock poisoned");
            self.positions.iter().filter(|(partition, _)| ownership.owns(partition)).collect()
        };
        if let Some(store) = outlets.state {
            if !last && self.last_snapshot.elapsed() < self.snapshot_interval {
                return Ok(());
            }
            let positions: Vec<Position> = owned
                .iter()
                .map(|((topic, partition), offset)| Position {
                    source: topic.clone(),
                    partition: *partition,
                    offset: **offset,
                })
                .collect();
            let bytes = pipeline.snapshot(store, &positions)?;
            tracing::debug!(bytes, partitions = positions.len(), "state snapshot written");
            self.last_snapshot = Instant::now();
        }
        if !owned.is_empty() {
            // Only what is ahead of the group's committed offsets: another member may have owned a
            // partition in between and gone further.
            let committed = match consumer.committed(COMMITTED_TIMEOUT) {
                Ok(committed) => committed,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the committed offsets; committing at the next checkpoint");
                    metrics.commit_failures.inc();
                    return Ok(());
                }
            };
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in &owned {
                let current = committed.find_partition(topic, *partition).and_then(|e| e.offset().to_raw());
                if current.is_none_or(|current| **offset > current) {
                    list.add_partition_offset(topic, *partition, Offset::Offset(**offset))?;
                }
            }
            // A failed commit loses nothing: the rows and the snapshot are durable, and the next
            // checkpoint commits again (a crash before it re-reads, and the detector or the
            // readers drop what it had). The broker may be away, or a rebalance under way.
            tracing::debug!(offsets = ?list, "committing");
            if list.count() > 0
                && let Err(error) = consumer.commit(&list, CommitMode::Sync)
            {
                tracing::warn!(%error, "offset commit failed; committing again at the next checkpoint");
                metrics.commit_failures.inc();
                return Ok(());
            }
        }
        self.uncommitted = false;
        Ok(())
    }
}
