//! Consumer lag from librdkafka's statistics, exported as a gauge per partition.

use crate::metrics::{Metrics, PartitionLabel};
use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::statistics::Statistics;
use std::sync::Arc;

/// The consumer's context: receives statistics every `statistics.interval.ms`.
pub struct LagContext {
    metrics: Arc<Metrics>,
}

impl LagContext {
    /// A context reporting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> LagContext {
        LagContext { metrics }
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
                let label = PartitionLabel { topic: topic.clone(), partition: partition.to_string() };
                self.metrics.consumer_lag.get_or_create(&label).set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for LagContext {}
