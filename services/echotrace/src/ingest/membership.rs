//! The `detect` stage's place in its consumer group while a batch waits long for the `link`
//! stage's answers.
//!
//! librdkafka takes a member out of its group when the application has not polled the consumer
//! for `max.poll.interval.ms`, and the group hands its partitions to another member. A `detect`
//! process waiting for a stopped `link` process would lose its partitions to a standby, which
//! would wait on the same shard and lose them in turn, around the group. So once a batch has
//! waited a third of that interval, [`Membership`] pauses every partition the consumer owns and
//! polls the consumer while the wait goes on: the poll passes no message (pausing purges what was
//! fetched, and fetching resumes from the last message passed on) but serves the group's events
//! and tells librdkafka that the application is alive. When the wait is over, the consumer loop
//! resumes those partitions ([`Membership::take_paused`]), except the ones paused for a reason of
//! their own: too many of their posts wait for the order, or their window awaits its check.
//!
//! Polling inside the rebalance callback would run librdkafka's consumer inside itself: a wait
//! there (the checkpoint before a revocation links the batch in flight) does not poll
//! ([`LagContext::in_rebalance`]).

use super::lag::{LagContext, Partition};
use crate::config::Config;
use crate::stages::probes::WhileWaiting;
use futures::FutureExt;
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a seek back waits for librdkafka.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// `max.poll.interval.ms` of the group consumer: the configured one, or long enough for the
/// consumer loop to rebuild the window of assigned partitions without polling the group (and at
/// least librdkafka's default, 300 s).
pub fn max_poll_interval(config: &Config) -> Duration {
    let configured = config.kafka.properties.get("max.poll.interval.ms").and_then(|ms| ms.parse::<u64>().ok());
    Duration::from_millis(configured.unwrap_or((config.state.rebuild_timeout_secs + 60).max(300) * 1000))
}

/// Keeps the group consumer polled while a batch waits long for the shards' answers.
pub struct Membership {
    /// Weak: the consumer's context holds the consumer loop's progress, which holds this.
    consumer: Weak<StreamConsumer<LagContext>>,
    /// How long a batch waits before the consumer's partitions are paused and it is polled.
    keep_after: Duration,
    /// The partitions paused for a wait, until the consumer loop resumes them.
    paused: Mutex<Option<BTreeSet<Partition>>>,
}

impl Membership {
    /// Keeps `consumer` in its group through the long waits of a batch, from a third of its
    /// `max.poll.interval.ms` on.
    pub fn new(config: &Config, consumer: &Arc<StreamConsumer<LagContext>>) -> Membership {
        Membership {
            consumer: Arc::downgrade(consumer),
            keep_after: max_poll_interval(config) / 3,
            paused: Mutex::new(None),
        }
    }

    /// The partitions paused for a wait that is over, to resume; `None` when none were.
    pub fn take_paused(&self) -> Option<BTreeSet<Partition>> {
        self.paused.lock().expect("paused lock poisoned").take()
    }

    /// Pauses the partitions the consumer owns that are not paused for the wait yet (a
    /// rebalance during the wait may have assigned some).
    fn pause_owned(&self, consumer: &StreamConsumer<LagContext>, paused: &mut BTreeSet<Partition>) {
        let owned = match consumer.assignment() {
            Ok(owned) => owned,
            Err(error) => {
                tracing::warn!(%error, "cannot read the consumer's assignment to pause it while waiting");
                return;
            }
        };
        let mut to_pause = rdkafka::TopicPartitionList::new();
        for element in owned.elements() {
            let partition = (element.topic().to_owned(), element.partition());
            if !paused.contains(&partition) {
                to_pause.add_partition(element.topic(), element.partition());
                paused.insert(partition);
            }
        }
        if to_pause.count() > 0
            && let Err(error) = consumer.pause(&to_pause)
        {
            tracing::warn!(%error, "cannot pause the consumer's partitions while waiting");
        }
    }
}

impl WhileWaiting for Membership {
    fn waiting(&self, waited: Duration) {
        if waited < self.keep_after {
            return;
        }
        let Some(consumer) = self.consumer.upgrade() else { return };
        if consumer.context().in_rebalance() {
            return;
        }
        {
            let mut paused = self.paused.lock().expect("paused lock poisoned");
            let first = paused.is_none();
            let paused = paused.get_or_insert_with(BTreeSet::new);
            self.pause_owned(&consumer, paused);
            if first {
                tracing::warn!(
                    waited_secs = waited.as_secs(),
                    partitions = paused.len(),
                    "a batch waits long for the linking shards: its partitions are paused and the consumer polled, to keep them in this process"
                );
            }
        }
        // Serves the group's events and counts as the application's poll.
        match consumer.recv().now_or_never() {
            None => {}
            Some(Ok(message)) => {
                // A paused partition passes nothing on (librdkafka drops what it fetched before the
                // pause); should a message come all the same, it is read again after the wait.
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    "a message came while the partitions were paused; it is read again after the wait"
                );
                let at = Offset::Offset(message.offset());
                if let Err(error) = consumer.seek(message.topic(), message.partition(), at, SEEK_TIMEOUT) {
                    tracing::error!(%error, "cannot seek back to the message that came while waiting");
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "consumer error while waiting for the linking shards; continuing")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_interval_is_the_configured_one_or_outlasts_a_rebuild() {
        let mut config = Config::default();
        config.state.rebuild_timeout_secs = 900;
        assert_eq!(max_poll_interval(&config), Duration::from_secs(960), "a rebuild and a minute");
        config.state.rebuild_timeout_secs = 10;
        assert_eq!(max_poll_interval(&config), Duration::from_secs(300), "librdkafka's default at least");
        config.kafka.properties.insert("max.poll.interval.ms".to_owned(), "9000".to_owned());
        assert_eq!(max_poll_interval(&config), Duration::from_secs(9));
    }
}
