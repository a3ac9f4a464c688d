//! Kafka sinks: the dead-letter topic, the edges topic and the alerts topic, and the prepared
//! topic between the staged deployment's stages ([`crate::stages`]).
//!
//! Sends return delivery futures instead of being awaited one by one; the consumer awaits them all
//! before it commits the offsets of the messages that produced them. Sending is synchronous (a full
//! producer queue is waited out on the caller's thread), so the consumer's rebalance callback,
//! which cannot await, publishes the same way as its loop.

use crate::config::{KafkaConfig, without_secret};
use crate::stages::InvalidInput;
use echotrace_core::records::EdgeRecord;
use echotrace_core::score::alerts::AlertEvent;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::time::Duration;

/// Header naming why a message was dead-lettered, for the operator.
pub const ERROR_HEADER: &str = "echotrace-error";
/// Header with the stable kind of error, for tooling.
pub const ERROR_KIND_HEADER: &str = "echotrace-error-kind";
/// Header with `topic/partition/offset` of the original message.
pub const SOURCE_HEADER: &str = "echotrace-source";

/// Where a consumed message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Publishes dead letters and edges.
pub struct KafkaPublisher {
    producer: FutureProducer,
    dead_letter_topic: String,
    edges_topic: String,
    alerts_topic: String,
}

impl KafkaPublisher {
    /// A publisher with the configured brokers and pass-through properties.
    pub fn new(config: &KafkaConfig) -> Result<KafkaPublisher, KafkaError> {
        KafkaPublisher::with_settings(config, &[])
    }

    /// A publisher that sends each message at once (`linger.ms` 0, where librdkafka waits 5 ms
    /// for more by default), for messages a process waits on: the exchange between the `detect`
    /// and `link` stages, one message per batch each way. The configured properties still win.
    pub fn for_round_trips(config: &KafkaConfig) -> Result<KafkaPublisher, KafkaError> {
        KafkaPublisher::with_settings(config, &[("linger.ms", "0")])
    }

    /// A publisher that never lets a message through past one refused for good: librdkafka's
    /// `enable.gapless.guarantee` makes such a refusal a fatal error that fails every later
    /// message of the producer, so the sender stops and, started again, sends the refused ones
    /// again before the rest. Without it, batches queued behind a refused one were delivered ahead
    /// of it (`tests/mock_cluster.rs`). For the prepared topic, whose partitions the `detect` stage
    /// links in the order they come. A message that times out (`message.timeout.ms`, the brokers
    /// unreachable that long) is not covered by librdkafka's guarantee.
    pub fn keeping_order(config: &KafkaConfig) -> Result<KafkaPublisher, KafkaError> {
        KafkaPublisher::with_settings(config, &[("enable.gapless.guarantee", "true")])
    }

    fn with_settings(config: &KafkaConfig, extra: &[(&str, &str)]) -> Result<KafkaPublisher, KafkaError> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers);
        // Dead letters carry the original bytes intact, even oversized ones.
        client.set("message.max.bytes", "16777216");
        client.set("enable.idempotence", "true");
        for (key, value) in extra {
            client.set(*key, *value);
        }
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        Ok(KafkaPublisher {
            producer: client.create().map_err(without_secret)?,
            dead_letter_topic: config.dead_letter_topic.clone(),
            edges_topic: config.edges_topic.clone(),
            alerts_topic: config.alerts_topic.clone(),
        })
    }

    /// Fails unless every output topic exists, so a missing topic stops start-up with its name rather
    /// than failing the first delivery (brokers in production seldom auto-create topics).
    pub fn check_topics(&self, timeout: Duration) -> Result<(), KafkaError> {
        use rdkafka::producer::Producer;
        for topic in [&self.dead_letter_topic, &self.edges_topic, &self.alerts_topic] {
            if topic.is_empty() {
                continue;
            }
            let metadata = self.producer.client().fetch_metadata(Some(topic), timeout).inspect_err(|error| {
                tracing::error!(
                    %error,
                    "cannot fetch metadata from the brokers: check kafka.brokers and, with SASL or TLS, the \
                     credentials in kafka.properties (librdkafka logs the cause above, e.g. an authentication error)"
                );
            })?;
            if let Some(error) = metadata.topics().iter().find_map(|t| t.error()) {
                tracing::error!(
                    topic,
                    "output topic missing or unusable: create it (deploy/README.md lists the topics)"
                );
                return Err(KafkaError::MetadataFetch(error.into()));
            }
        }
        Ok(())
    }

    /// Sends the original message to the dead-letter topic with the reason in its headers.
    pub fn dead_letter(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        source: &Source,
        error: &InvalidInput,
    ) -> Result<DeliveryFuture, KafkaError> {
        let reason = error.to_string();
        let origin = format!("{}/{}/{}", source.topic, source.partition, source.offset);
        let headers = OwnedHeaders::new()
            .insert(Header { key: ERROR_HEADER, value: Some(reason.as_str()) })
            .insert(Header { key: ERROR_KIND_HEADER, value: Some(error.kind()) })
            .insert(Header { key: SOURCE_HEADER, value: Some(origin.as_str()) });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.dead_letter_topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.enqueue(record)
    }

    /// How many partitions `topic` has; fails, saying what to do, when it does not exist.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<i32, anyhow::Error> {
        use anyhow::Context;
        use rdkafka::producer::Producer;
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .context("cannot fetch metadata from the brokers (kafka.brokers, kafka.properties)")?;
        match metadata.topics().iter().find(|found| found.name() == topic) {
            Some(found) if found.error().is_none() && !found.partitions().is_empty() => {
                Ok(found.partitions().len() as i32)
            }
            _ => anyhow::bail!(
                "topic {topic} does not exist: create it (deploy/README.md lists the topics; the prepared topic \
                 has as many partitions as the input topic)"
            ),
        }
    }

    /// Sends one prepared post to `topic`'s `partition`, keyed by its post id, with the timestamp
    /// of the message it was prepared from.
    pub fn prepared(
        &self,
        topic: &str,
        partition: i32,
        post_id: &str,
        payload: &[u8],
        timestamp: Option<i64>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut record =
            FutureRecord::<[u8], [u8]>::to(topic).payload(payload).key(post_id.as_bytes()).partition(partition);
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        self.enqueue(record)
    }

    /// Sends one message of the exchange between the `detect` and `link` stages
    /// ([`crate::stages::probes`]) to `topic`'s `partition`.
    pub fn exchange(&self, topic: &str, partition: i32, payload: &[u8]) -> Result<DeliveryFuture, KafkaError> {
        self.enqueue(FutureRecord::<[u8], [u8]>::to(topic).payload(payload).partition(partition))
    }

    /// Sends each edge as JSON, keyed by cascade so one cascade's edges stay in order.
    pub fn edges(&self, edges: &[EdgeRecord]) -> Result<Vec<DeliveryFuture>, KafkaError> {
        self.json_by_cascade(&self.edges_topic, edges.iter().map(|e| (e.cascade_id.as_str(), e)))
    }

    /// Sends each alert event as JSON (the audit trail), keyed by cascade.
    pub fn alerts(&self, alerts: &[AlertEvent]) -> Result<Vec<DeliveryFuture>, KafkaError> {
        self.json_by_cascade(&self.alerts_topic, alerts.iter().map(|a| (a.cascade_id.as_str(), a)))
    }

    fn json_by_cascade<'a, T: serde::Serialize + 'a>(
        &self,
        topic: &str,
        items: impl Iterator<Item = (&'a str, &'a T)>,
    ) -> Result<Vec<DeliveryFuture>, KafkaError> {
        let mut deliveries = Vec::new();
        if topic.is_empty() {
            return Ok(deliveries);
        }
        for (cascade_id, item) in items {
            let json = serde_json::to_vec(item).expect("records serialize");
            let record = FutureRecord::<[u8], [u8]>::to(topic).payload(&json).key(cascade_id.as_bytes());
            deliveries.push(self.enqueue(record)?);
        }
        Ok(deliveries)
    }

    /// Enqueues a record, waiting while the producer's queue is full (backpressure, not loss; the
    /// producer's own thread drains the queue meanwhile).
    fn enqueue<'a>(&self, mut record: FutureRecord<'a, [u8], [u8]>) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    if let Some((code, reason)) = rdkafka::producer::Producer::client(&self.producer).fatal_error() {
                        tracing::error!(?code, %reason, "the Kafka producer stopped for good: nothing more is sent");
                    }
                    return Err(error);
                }
            }
        }
    }
}
