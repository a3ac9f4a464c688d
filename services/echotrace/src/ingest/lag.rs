//! The consumer's context: lag from librdkafka's statistics (a gauge per partition), readiness,
//! and [`Ownership`], the partitions this member owns, which the consumer loop reads before it
//! commits, and those whose window it does not hold yet: these are paused when assigned until the
//! loop has rebuilt their window ([`super::rebuild`]). Readiness holds while the group has assigned this member a partition and a broker
//! connection is up: librdkafka reports every broker down at once as an error, and the broker
//! states in each statistics report (every `statistics.interval.ms`) say when one is back.

use crate::metrics::Metrics;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A topic and partition.
pub type Partition = (String, i32);

/// The partitions this member owns, as the group's rebalances say (the consumer loop commits
/// offsets for these alone), and which of them it holds the window of.
#[derive(Debug, Default)]
pub struct Ownership {
    assigned: BTreeSet<Partition>,
    /// Partitions whose posts before the group's committed offset are in this member's window
    /// (restored, rebuilt, or read by it); `None`: every partition, nothing is rebuilt.
    held: Option<BTreeSet<Partition>>,
    /// Assigned partitions paused until their window is rebuilt.
    to_rebuild: BTreeSet<Partition>,
    /// Partitions whose window the consumer loop is rebuilding now.
    rebuilding: BTreeSet<Partition>,
    /// Whether the group has assigned partitions since the start.
    assigned_once: bool,
}

impl Ownership {
    /// An owner that holds the window of `held` partitions and rebuilds any other it is assigned;
    /// `None`: it never rebuilds.
    pub fn holding(held: Option<BTreeSet<Partition>>) -> Ownership {
        Ownership { held, ..Ownership::default() }
    }

    /// Whether this member owns `partition` now.
    pub fn owns(&self, partition: &Partition) -> bool {
        self.assigned.contains(partition)
    }

    /// Takes the assigned partitions waiting for their window, marking them held and being
    /// rebuilt (not ready) until [`LagContext::rebuilt`].
    pub fn take_to_rebuild(&mut self) -> BTreeSet<Partition> {
        let taken = std::mem::take(&mut self.to_rebuild);
        if let Some(held) = &mut self.held {
            held.extend(taken.iter().cloned());
        }
        self.rebuilding = taken.into_iter().filter(|partition| self.assigned.contains(partition)).collect();
        self.rebuilding.clone()
    }
}

/// The consumer's context: receives statistics every `statistics.interval.ms`, errors and
/// rebalances.
pub struct LagContext {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    ownership: Arc<Mutex<Ownership>>,
    brokers_up: AtomicBool,
}

impl LagContext {
    /// A context reporting into `metrics`, into `ready` whether partitions are assigned, and into
    /// `ownership` which.
    pub fn new(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, ownership: Arc<Mutex<Ownership>>) -> LagContext {
        LagContext { metrics, ready, ownership, brokers_up: AtomicBool::new(true) }
    }

    /// Ready: partitions assigned, their windows in place, and a broker up.
    fn update_ready(&self, ownership: &Ownership) {
        let ready = !ownership.assigned.is_empty()
            && ownership.to_rebuild.is_empty()
            && ownership.rebuilding.is_empty()
            && self.brokers_up.load(Ordering::Relaxed);
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The consumer loop has rebuilt the windows it took and resumed their partitions.
    pub fn rebuilt(&self) {
        let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
        ownership.rebuilding.clear();
        self.update_ready(&ownership);
    }
}

fn partitions(list: &rdkafka::TopicPartitionList) -> Vec<Partition> {
    list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

impl ClientContext for LagContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) {
            self.brokers_up.store(false, Ordering::Relaxed);
            self.update_ready(&self.ownership.lock().expect("ownership lock poisoned"));
        }
    }

    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|broker| broker.nodeid >= 0 && broker.state == "UP");
        self.brokers_up.store(up, Ordering::Relaxed);
        self.update_ready(&self.ownership.lock().expect("ownership lock poisoned"));
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
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = list.count(), "partitions assigned");
                let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
                let assigned = partitions(list);
                // What start-up held of partitions another member was given meanwhile is stale.
                if !std::mem::replace(&mut ownership.assigned_once, true)
                    && let Some(held) = &mut ownership.held
                {
                    held.retain(|partition| assigned.contains(partition));
                }
                let unheld: Vec<Partition> = match &ownership.held {
                    Some(held) => assigned.iter().filter(|p| !held.contains(*p)).cloned().collect(),
                    None => Vec::new(),
                };
                if !unheld.is_empty() {
                    let mut paused = rdkafka::TopicPartitionList::new();
                    unheld.iter().for_each(|(topic, partition)| {
                        paused.add_partition(topic, *partition);
                    });
                    match consumer.pause(&paused) {
                        Ok(()) => {
                            tracing::info!(partitions = ?unheld, "paused until their window is rebuilt");
                            ownership.to_rebuild.extend(unheld);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot pause new partitions; consuming them without their window")
                        }
                    }
                }
                ownership.assigned.extend(assigned);
                self.update_ready(&ownership);
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = list.count(), "partitions revoked");
                let mut ownership = self.ownership.lock().expect("ownership lock poisoned");
                for partition in partitions(list) {
                    ownership.assigned.remove(&partition);
                    // Its next owner reads on; were it to come back, this window would miss that.
                    if let Some(held) = &mut ownership.held {
                        held.remove(&partition);
                    }
                }
                self.update_ready(&ownership);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
