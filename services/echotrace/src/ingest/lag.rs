//! The consumer's context: lag from librdkafka's statistics (a gauge per partition), readiness,
//! which follows whether the group has assigned this member any partition, and [`Ownership`], the
//! partitions it owns, which the consumer loop reads before it commits.

use crate::metrics::Metrics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A topic and partition.
pub type Partition = (String, i32);

/// The partitions this member owns, as the group's rebalances say, and those it lost since the
/// consumer loop last looked: the loop forgets their offsets, so it never commits one for a
/// partition another member owns now, nor an old one over that member's progress.
#[derive(Debug, Default)]
pub struct Ownership {
    assigned: BTreeSet<Partition>,
    revoked: Vec<Partition>,
}

impl Ownership {
    /// Whether this member owns `partition` now.
    pub fn owns(&self, partition: &Partition) -> bool {
        self.assigned.contains(partition)
    }

    /// The partitions lost since the last call.
    pub fn take_revoked(&mut self) -> Vec<Partition> {
        std::mem::take(&mut self.revoked)
    }
}

/// The consumer's context: receives statistics every `statistics.interval.ms` and rebalances.
pub struct LagContext {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    ownership: Arc<Mutex<Ownership>>,
}

impl LagContext {
    /// A context reporting into `metrics`, into `ready` whether partitions are assigned, and into
    /// `ownership` which.
    pub fn new(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, ownership: Arc<Mutex<Ownership>>) -> LagContext {
        LagContext { metrics, ready, ownership }
    }
}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<Partition> {
    list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
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
            Rebalance::Assign(list) => {
                tracing::info!(partitions = list.count(), "partitions assigned");
                let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
                ownership.assigned.extend(partitions(list));
                self.ready.store(!ownership.assigned.is_empty(), Ordering::Relaxed);
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = list.count(), "partitions revoked");
                let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
                for partition in partitions(list) {
                    ownership.assigned.remove(&partition);
                    ownership.revoked.push(partition);
                }
                self.ready.store(!ownership.assigned.is_empty(), Ordering::Relaxed);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
