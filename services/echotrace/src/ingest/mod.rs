//! Ingest: the Kafka consumer loop that `run` and `demo` share.
//!
//! A `StreamConsumer` in a consumer group reads posts. Each message is decoded and validated
//! ([`Post::from_json`]); a bad one goes to the dead-letter topic with its reason and original bytes,
//! and the loop goes on. A good one goes through the [`Pipeline`]. Offsets are stored in memory and
//! committed only at a checkpoint: after the Parquet flush has made every buffered row durable and
//! every dead letter and edge sent since the last checkpoint has been acknowledged by the brokers.
//! A crash between checkpoints replays those messages (at-least-once); the detector drops ids it has
//! already processed, and readers of the datasets deduplicate by `post_id` across restarts.

pub mod lag;

use crate::alerting::AlertNotice;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Processed};
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use chrono::DateTime;
use echotrace_core::post::Post;
use futures::future::try_join_all;
use lag::LagContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::DeliveryFuture;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
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
}

/// Creates the group consumer with the configured properties.
pub fn consumer(
    config: &Config,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> Result<StreamConsumer<LagContext>, KafkaError> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        // Oversized messages must still be fetched, so they can be dead-lettered rather than stall
        // their partition.
        .set("fetch.message.max.bytes", "16777216")
        .set("fetch.max.bytes", "33554432")
        .set("receive.message.max.bytes", "41943040");
    for (key, value) in &config.kafka.properties {
        client.set(key, value);
    }
    let consumer: StreamConsumer<LagContext> = client.create_with_context(LagContext::new(metrics, ready))?;
    let topics: Vec<&str> = config.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Consumes until `shutdown` fires, checkpointing every `output.flush_rows` posts or
/// `output.flush_interval_ms`; a last checkpoint is taken on the way out.
pub async fn consume(
    config: &Config,
    consumer: &StreamConsumer<LagContext>,
    publisher: &KafkaPublisher,
    pipeline: &mut Pipeline,
    metrics: &Metrics,
    alert_notices: Option<&mpsc::Sender<AlertNotice>>,
    mut shutdown: Shutdown,
) -> Result<(), IngestError> {
    let mut checkpoint = Checkpoint::default();
    let mut ticker = tokio::time::interval(config.output.flush_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
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
                        checkpoint.publish(processed, publisher, alert_notices).await?;
                    }
                    Err(error) => {
                        tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, source.offset), kind = error.kind(), %error, "dead-lettering message");
                        metrics.dead_letters.with_label_values(&[error.kind()]).inc();
                        checkpoint.deliveries.push(publisher.dead_letter(message.key(), payload, &source, &error).await?);
                    }
                }
                checkpoint.offsets.insert((source.topic, source.partition), source.offset + 1);
                metrics.processing_seconds.observe(started.elapsed().as_secs_f64());
                if pipeline.buffered_posts() >= config.output.flush_rows {
                    checkpoint.take(consumer, pipeline, publisher, alert_notices, metrics).await?;
                }
            }
            _ = until(pipeline.batch_deadline()) => {
                let processed = pipeline.run_batch();
                checkpoint.publish(processed, publisher, alert_notices).await?;
            }
            _ = ticker.tick() => checkpoint.take(consumer, pipeline, publisher, alert_notices, metrics).await?,
            _ = shutdown.recv() => {
                tracing::info!("shutting down: taking a last checkpoint");
                return checkpoint.take(consumer, pipeline, publisher, alert_notices, metrics).await;
            }
        }
    }
}

/// What has been processed since the last commit.
#[derive(Default)]
struct Checkpoint {
    offsets: BTreeMap<(String, i32), i64>,
    deliveries: Vec<DeliveryFuture>,
}

/// Waits until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

impl Checkpoint {
    /// Publishes what processed posts produced (edges and alerts to Kafka, alerts to the dispatcher)
    /// and keeps the deliveries to await at the checkpoint.
    async fn publish(
        &mut self,
        processed: Vec<Processed>,
        publisher: &KafkaPublisher,
        alert_notices: Option<&mpsc::Sender<AlertNotice>>,
    ) -> Result<(), IngestError> {
        for processed in processed {
            self.deliveries.extend(publisher.edges(&processed.edges).await?);
            self.deliveries.extend(publisher.alerts(&processed.alerts).await?);
            if let Some(notices) = alert_notices {
                for event in processed.alerts {
                    // A full channel waits: alerts slow the consumer down, never vanish.
                    let _ = notices.send(AlertNotice { event, produced_at: processed.produced_at }).await;
                }
            }
        }
        Ok(())
    }

    /// Runs the waiting embedding batch, flushes Parquet, awaits every delivery, then commits the
    /// offsets, in that order.
    async fn take(
        &mut self,
        consumer: &StreamConsumer<LagContext>,
        pipeline: &mut Pipeline,
        publisher: &KafkaPublisher,
        alert_notices: Option<&mpsc::Sender<AlertNotice>>,
        metrics: &Metrics,
    ) -> Result<(), IngestError> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        let processed = pipeline.run_batch();
        self.publish(processed, publisher, alert_notices).await?;
        pipeline.flush()?;
        let outcomes = try_join_all(self.deliveries.drain(..))
            .await
            .map_err(|_| IngestError::Delivery("the producer was dropped".into()))?;
        if let Some(Err((error, _))) = outcomes.into_iter().find(Result::is_err) {
            return Err(IngestError::Delivery(error.to_string()));
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &self.offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        consumer.commit(&list, CommitMode::Sync)?;
        self.offsets.clear();
        metrics.checkpoints.inc();
        Ok(())
    }
}
