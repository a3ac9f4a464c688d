//! Rebuilding the window from Kafka when no snapshot could be restored (none yet, refused, or
//! snapshots off): the posts of the last `detector.window_secs` before the group's committed
//! offsets are read again and processed with the sinks muted, so the detector and the scorer stand
//! where an uninterrupted run would, and nothing is written or published twice.
//!
//! Where to start is found by produce time: for each partition, the timestamp of the last committed
//! message, less the window and a tenth of it for posts produced late, is looked up with
//! `offsets_for_times`. A broker that cannot answer the lookup is read from the partition's start
//! (the detector evicts what is older than its window). Posts produced more than that reach before
//! the last committed one are not re-read. Processing is deterministic on event time, so the
//! rebuilt state links and scores the next posts as the lost one would have, up to those posts.
//!
//! The same runs for a partition a rebalance hands over from another member: it is paused when
//! assigned ([`super::lag`]), its window is read into this member's (posts older than this
//! member's watermark arrive late, as out-of-order posts do), and it is resumed.

use super::lag::Partition;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::stages::{Decoded, InputDecoder};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// How long a metadata, committed-offsets or timestamp lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the last committed message of every partition. A partition that gives
/// none in time is read from its start. Kafka answers a fetch from an offset inside a record
/// batch with that batch; tansu 0.6 (the tests' broker) answers nothing, so there each rebuild
/// waits this out (the `broker_faults` revocation test: 30.5 s for 337 posts).
const LAST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// An offset in each of some partitions.
type Offsets = BTreeMap<Partition, i64>;

/// What a rebuild read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Posts processed again.
    pub posts: u64,
    /// Partitions with committed offsets, read up to them.
    pub partitions: BTreeSet<Partition>,
    /// Every partition whose window is now held, with the offset it is held up to: those read, and
    /// those with nothing committed past the log's start (nothing to read).
    pub held: BTreeMap<Partition, i64>,
    /// Whether every partition was read up to its committed offset before the timeout.
    pub complete: bool,
}

/// Reads the window before the group's committed offsets into `pipeline`, muted: of every input
/// partition, or of `only` these. Returns what it read; a partition never committed has nothing
/// to rebuild.
pub async fn rebuild_window(
    config: &Config,
    pipeline: &mut Pipeline,
    only: Option<&BTreeSet<Partition>>,
) -> Result<Rebuilt, KafkaError> {
    let consumer = reader(config)?;
    let decoder = InputDecoder::new(config);
    let (mut held, mut ends) = committed_ends(config, &consumer)?;
    if let Some(only) = only {
        held.retain(|partition, _| only.contains(partition));
        ends.retain(|partition, _| only.contains(partition));
    }
    if ends.is_empty() {
        return Ok(Rebuilt { complete: true, held, ..Rebuilt::default() });
    }
    let reach_ms = (config.detector.window_secs as f64 * 1100.0) as i64;
    let last_times = last_timestamps(&consumer, &ends).await?;
    let mut lookup = TopicPartitionList::new();
    for (topic, partition) in ends.keys() {
        match last_times.get(&(topic.clone(), *partition)) {
            Some(time) => lookup.add_partition_offset(topic, *partition, Offset::Offset(time - reach_ms))?,
            None => lookup.add_partition_offset(topic, *partition, Offset::Beginning)?,
        }
    }
    let starts = consumer.offsets_for_times(lookup, LOOKUP_TIMEOUT)?;
    let mut assignment = TopicPartitionList::new();
    for element in starts.elements() {
        let start = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        assignment.add_partition_offset(element.topic(), element.partition(), start)?;
    }
    consumer.assign(&assignment)?;

    let mut remaining = ends.clone();
    let mut rebuilt = Rebuilt { partitions: ends.keys().cloned().collect(), held, ..Rebuilt::default() };
    let deadline = Instant::now() + Duration::from_secs(config.state.rebuild_timeout_secs);
    pipeline.set_muted(true);
    while !remaining.is_empty() {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(error)) => {
                tracing::warn!(%error, "consumer error while rebuilding the window; continuing");
                continue;
            }
            Ok(Ok(message)) => message,
        };
        let key = (message.topic().to_owned(), message.partition());
        let Some(&end) = remaining.get(&key) else { continue };
        if message.offset() + 1 >= end {
            remaining.remove(&key);
            let mut done = TopicPartitionList::new();
            done.add_partition(&key.0, key.1);
            consumer.pause(&done)?;
        }
        if message.offset() >= end {
            continue;
        }
        // Invalid messages were dead-lettered when they were first read.
        if let Ok(Decoded::Post { input, .. }) = decoder.decode(message.payload().unwrap_or_default()) {
            // With its arrival time, as the first read had it: event time moves the same way.
            let produced_at = message.timestamp().to_millis().and_then(chrono::DateTime::from_timestamp_millis);
            pipeline.submit_input(input, produced_at);
            rebuilt.posts += 1;
        }
    }
    pipeline.run_batch();
    pipeline.set_muted(false);
    rebuilt.complete = remaining.is_empty();
    Ok(rebuilt)
}

/// A consumer that reads by assignment, in the group only to read its committed offsets.
fn reader(config: &Config) -> Result<StreamConsumer, KafkaError> {
    super::client_config(config, &[]).create().map_err(crate::config::without_secret)
}

/// Every input partition with its committed offset (0 when it has none), and the committed offset
/// of those that have one past the start of what the partition still holds.
fn committed_ends(config: &Config, consumer: &StreamConsumer) -> Result<(Offsets, Offsets), KafkaError> {
    let mut partitions = TopicPartitionList::new();
    for topic in &InputDecoder::topics(config) {
        let metadata = consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            partitions.add_partition(topic, partition.id());
        }
    }
    let committed = consumer.committed_offsets(partitions, LOOKUP_TIMEOUT)?;
    let all = committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(offset) => offset,
                _ => 0,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect();
    let mut ends = BTreeMap::new();
    for element in committed.elements() {
        let Offset::Offset(end) = element.offset() else { continue };
        let (low, _) = consumer.fetch_watermarks(element.topic(), element.partition(), LOOKUP_TIMEOUT)?;
        if end > low {
            ends.insert((element.topic().to_owned(), element.partition()), end);
        }
    }
    Ok((all, ends))
}

/// The produce time (milliseconds) of the last committed message of each partition, or of the
/// first one after it that is still there. Partitions that answer nothing in time are left out.
async fn last_timestamps(
    consumer: &StreamConsumer,
    ends: &BTreeMap<Partition, i64>,
) -> Result<BTreeMap<Partition, i64>, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    for ((topic, partition), end) in ends {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(end - 1))?;
    }
    consumer.assign(&assignment)?;
    let mut times = BTreeMap::new();
    let deadline = Instant::now() + LAST_MESSAGE_TIMEOUT;
    while times.len() < ends.len() {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(error)) => tracing::warn!(%error, "consumer error while finding where to rebuild from"),
            Ok(Ok(message)) => {
                if let Some(time) = message.timestamp().to_millis() {
                    times.entry((message.topic().to_owned(), message.partition())).or_insert(time);
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(times)
}
