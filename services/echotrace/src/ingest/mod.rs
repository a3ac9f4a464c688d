//! Ingest: the Kafka consumer loop that `run` and `demo` share.
//!
//! A `StreamConsumer` in a consumer group reads posts. Each message is decoded and validated
//! ([`Post::from_json`](echotrace_core::post::Post::from_json)); a bad one goes to the dead-letter topic with its reason and original bytes,
//! and the loop goes on. A good one goes through the [`Pipeline`](crate::pipeline::Pipeline). Offsets are kept in memory and
//! committed only at a checkpoint: after the Parquet flush has made every buffered row durable and
//! every dead letter and edge sent since the last checkpoint has been acknowledged by the brokers.
//!
//! With state snapshots on (`state.dir`), offsets are committed only behind a snapshot of the
//! detector and the scorer, taken at most every `state.snapshot_interval_secs`: the snapshot first,
//! then the offsets it reflects, so the committed offsets never run ahead of the state a restart
//! resumes from. A checkpoint copies the state and encodes and writes the snapshot from the copy
//! on a thread of its own, so consumption pauses only for the copy; the first checkpoint after it
//! is in place commits its offsets. Between snapshots, checkpoints still flush rows for readers.
//!
//! A crash re-reads the messages since the last commit (at-least-once): with a snapshot restored,
//! the detector recognizes the posts it already holds and drops them; without one, readers of the
//! datasets and `echotrace compact` deduplicate by `post_id`. Offsets are committed only for the
//! partitions this member owns at the time, and only where they are ahead of the group's committed
//! offset: a partition that went to another member in a rebalance and came back never has its
//! offset moved back over that member's progress. Before partitions are revoked, the rebalance
//! callback takes a checkpoint with a snapshot ([`checkpoint::Progress::before_revoke`]), so the
//! next owner starts where this member stopped.

pub mod checkpoint;
pub mod lag;
pub mod membership;
pub mod ordering;
pub mod rebuild;

use crate::alerting::AlertNotice;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::state::StateError;
use checkpoint::Progress;
use lag::{LagContext, Ownership, Partition};
use membership::Membership;
use ordering::Flow;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
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
    /// The state snapshot could not be written; offsets were not committed.
    #[error("cannot write the state snapshot: {0}")]
    State(#[from] StateError),
}

/// The settings every consumer of the input shares: the group (offsets are committed by hand, at
/// checkpoints), the prefetch bound, fetch sizes that let oversized messages through to be dead-lettered rather
/// than stall their partition, then `extra`, then the configured properties, which win.
pub(crate) fn client_config(config: &Config, extra: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The consumer's one buffer: librdkafka stops fetching once this much is queued, so a
        // flood waits in Kafka (lag) while the loop takes one message at a time.
        .set("queued.max.messages.kbytes", "65536")
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
    // The loop rebuilds the window of assigned partitions without polling the group: the member
    // must not be taken for stuck meanwhile.
    let max_poll_interval = membership::max_poll_interval(config).as_millis().to_string();
    let client = client_config(
        config,
        &[
            ("auto.offset.reset", "earliest"),
            // Lag for the metrics, and whether the brokers are back for readiness.
            ("statistics.interval.ms", "5000"),
            ("max.poll.interval.ms", max_poll_interval.as_str()),
        ],
    );
    let consumer: StreamConsumer<LagContext> = client
        .create_with_context(LagContext::new(metrics, ready, ownership))
        .map_err(crate::config::without_secret)?;
    let topics = crate::stages::InputDecoder::topics(config);
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Consumes until `shutdown` fires, checkpointing every `output.flush_rows` posts or
/// `output.flush_interval_ms`; a last checkpoint, with a snapshot, is taken on the way out. Alert
/// notices go to `alert_notices`, when a dispatcher runs.
pub async fn consume(
    config: &Config,
    shared_consumer: &Arc<StreamConsumer<LagContext>>,
    progress: Arc<tokio::sync::Mutex<Progress>>,
    alert_notices: Option<&mpsc::Sender<AlertNotice>>,
    metrics: &Metrics,
    mut shutdown: Shutdown,
) -> Result<(), IngestError> {
    let membership = Arc::new(Membership::new(config, shared_consumer));
    let consumer: &StreamConsumer<LagContext> = shared_consumer;
    consumer.context().attach(progress.clone());
    progress.lock().await.pipeline.keep_waiting_with(membership.clone());
    let ownership = consumer.context().ownership();
    let mut ticker = tokio::time::interval(config.output.flush_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ends = if progress.lock().await.reads_input() {
        Some(lag::PartitionEnds::new(config, &config.kafka.group_id, lag::READ_TO_END_TIMEOUT)?)
    } else {
        None
    };
    let mut idle_refresh = tokio::time::interval(ordering::IDLE_REFRESH);
    idle_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The guard is never held across `recv`: the rebalance callback, which runs inside it,
        // takes the progress for its checkpoint.
        if let Some(paused) = membership.take_paused() {
            resume_after_wait(consumer, &*progress.lock().await, paused)?;
        }
        let unsent = progress.lock().await.take_unsent();
        if let Some(notices) = alert_notices {
            for notice in unsent {
                // A full channel waits: alerts slow the consumer down, never vanish.
                let _ = notices.send(notice).await;
            }
        }
        let to_check = ownership.lock().expect("ownership lock poisoned").take_to_check();
        if !to_check.is_empty() {
            let mut progress = progress.lock().await;
            check_assigned(config, consumer, &mut progress, metrics, to_check).await?;
            continue;
        }
        let batch_deadline = progress.lock().await.pipeline.batch_deadline();
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
                let mut progress = progress.lock().await;
                progress.read(&message)?;
                apply_flow(consumer, progress.take_flow())?;
                metrics.processing_seconds.observe(started.elapsed().as_secs_f64());
                if progress.pipeline.buffered_posts() >= config.output.flush_rows {
                    progress.take(consumer, false).await?;
                }
            }
            _ = consumer.context().partitions_to_check() => continue,
            _ = until(batch_deadline) => progress.lock().await.run_due_batch()?,
            _ = ticker.tick() => progress.lock().await.take(consumer, false).await?,
            _ = idle_refresh.tick() => {
                // Asked with the progress unlocked; no message is read meanwhile.
                let read_to_end = match &ends {
                    Some(ends) if progress.lock().await.awaits_idle_marks() => Some(ends.read_to_end(consumer).await),
                    _ => None,
                };
                let mut progress = progress.lock().await;
                progress.renew_idle(read_to_end.as_ref())?;
                apply_flow(consumer, progress.take_flow())?;
            }
            _ = shutdown.recv() => {
                tracing::info!("shutting down: taking a last checkpoint");
                let mut progress = progress.lock().await;
                progress.take(consumer, true).await?;
                if let Some(notices) = alert_notices {
                    for notice in progress.take_unsent() {
                        let _ = notices.send(notice).await;
                    }
                }
                return Ok(());
            }
        }
    }
}

/// Checks the windows of partitions a rebalance assigned (and paused) against the group's
/// committed offsets; where the group went further than this member holds, takes the state
/// snapshot over ([`Progress::take_over`]: a member starting, or standing by) or else rebuilds
/// those partitions from Kafka; then resumes them all.
async fn check_assigned(
    config: &Config,
    consumer: &StreamConsumer<LagContext>,
    progress: &mut Progress,
    metrics: &Metrics,
    partitions: BTreeSet<Partition>,
) -> Result<(), IngestError> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in &partitions {
        list.add_partition(topic, *partition);
    }
    let committed = lag::committed_offsets(consumer, &list);
    let ownership = consumer.context().ownership();
    let to_rebuild =
        ownership.lock().expect("ownership lock poisoned").needing_rebuild(&partitions, committed.as_ref());
    tracing::info!(committed = ?committed, to_rebuild = ?to_rebuild, "windows checked against the committed offsets");
    let mut held = std::collections::BTreeMap::new();
    if !to_rebuild.is_empty() {
        // What waits in the batch is processed and published before the state is replaced or
        // the sinks are muted.
        progress.run_batch()?;
        if let Some(restored) = progress.take_over(&partitions, committed.as_ref()) {
            held = restored;
        } else if config.state.rebuild_from_kafka {
            held = rebuild_assigned(config, progress, metrics, &to_rebuild).await?;
        } else {
            tracing::warn!(
                partitions = ?to_rebuild,
                "the group committed past what this member holds and state.rebuild_from_kafka is off: \
                 their posts before the commit are not in the window"
            );
        }
    }
    // Only what is still assigned: a rebalance may have taken some meanwhile.
    let owned = ownership.lock().expect("ownership lock poisoned");
    let mut resumed = TopicPartitionList::new();
    for (topic, partition) in partitions.iter().filter(|partition| owned.owns(partition)) {
        resumed.add_partition(topic, *partition);
    }
    drop(owned);
    consumer.resume(&resumed)?;
    consumer.context().rebuilt(&held);
    Ok(())
}

/// Rebuilds the window of `to_rebuild` from Kafka; returns the offsets it holds them up to.
async fn rebuild_assigned(
    config: &Config,
    progress: &mut Progress,
    metrics: &Metrics,
    to_rebuild: &BTreeSet<Partition>,
) -> Result<std::collections::BTreeMap<Partition, i64>, IngestError> {
    metrics.window_rebuilds.inc_by(to_rebuild.len() as u64);
    let started = Instant::now();
    let rebuilt = rebuild::rebuild_window(config, &mut progress.pipeline, Some(to_rebuild)).await?;
    tracing::info!(
        partitions = ?to_rebuild,
        posts = rebuilt.posts,
        complete = rebuilt.complete,
        seconds = started.elapsed().as_secs_f64(),
        "window of assigned partitions rebuilt from Kafka"
    );
    Ok(rebuilt.held)
}

/// Pauses the partitions with too many posts waiting for the order, and resumes those whose posts
/// went on, except one still paused for the check of its window, which resumes it.
fn apply_flow(consumer: &StreamConsumer<LagContext>, flow: Flow) -> Result<(), KafkaError> {
    let list = |partitions: &[Partition]| {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        list
    };
    if !flow.pause.is_empty() {
        tracing::debug!(partitions = ?flow.pause, "paused: their posts wait for the other partitions");
        consumer.pause(&list(&flow.pause))?;
    }
    let resume: Vec<Partition> = {
        let ownership = consumer.context().ownership();
        let ownership = ownership.lock().expect("ownership lock poisoned");
        flow.resume
            .into_iter()
            .filter(|partition| ownership.owns(partition) && !ownership.awaits_check(partition))
            .collect()
    };
    if !resume.is_empty() {
        tracing::debug!(partitions = ?resume, "resumed");
        consumer.resume(&list(&resume))?;
    }
    Ok(())
}

/// Resumes the partitions paused while a batch waited for the linking shards
/// ([`Membership`]), except those no longer owned and those paused for a reason of their own:
/// too many of their posts wait for the order, or their window awaits its check.
fn resume_after_wait(
    consumer: &StreamConsumer<LagContext>,
    progress: &Progress,
    paused: BTreeSet<Partition>,
) -> Result<(), KafkaError> {
    let mut resume = TopicPartitionList::new();
    {
        let ownership = consumer.context().ownership();
        let ownership = ownership.lock().expect("ownership lock poisoned");
        for (topic, partition) in &paused {
            let key = (topic.clone(), *partition);
            if ownership.owns(&key) && !ownership.awaits_check(&key) && !progress.holds_paused(&key) {
                resume.add_partition(topic, *partition);
            }
        }
    }
    tracing::info!(partitions = resume.count(), "the linking shards answered: partitions resumed");
    consumer.resume(&resume)
}

/// Waits until `deadline`, or forever when there is none.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
