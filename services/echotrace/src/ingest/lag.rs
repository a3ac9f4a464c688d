//! The consumer's context: lag from librdkafka's statistics (a gauge per partition), and readiness,
//! which follows whether the group has assigned this member any partition.

use crate::metrics::Metrics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The consumer's context: receives statistics every `statistics.interval.ms`.
pub struct LagContext {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl LagContext {
    /// A context reporting into `metrics`, and into `ready` whether partitions are assigned.
    pub fn new(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> LagContext {
        LagContext { metrics, ready }
    }
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                // librdkafka reports -1 for partitions this member does not consume, and the
                // internal partition -1 ("UA") is not a real one.
                if *partition < 0 || stats.consumer_lag < 0 {
                    continue;
                }
                let partition = partition.to_string();
                self.metrics
                    .consumer_lag
                    .with_label_values(&[topic.as_str(), partition.as_str()])
                    .set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for LagContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = partitions.count(), "partitions assigned");
                self.ready.store(partitions.count() > 0, Ordering::Relaxed);
            }
            Rebalance::Revoke(_) => self.ready.store(false, Ordering::Relaxed),
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
