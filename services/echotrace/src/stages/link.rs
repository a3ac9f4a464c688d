//! The `link` stage (`stage.role = "link"`): one linking shard of the lexical window, out of the
//! `detect` process, answering its probes over Kafka ([`super::probes`]).
//!
//! Shard `stage.link_shard` of `detector.link_shards` holds the near-duplicate, word-set and
//! shared-URL entries under the lookup keys it owns ([`LexicalShard`]). It reads the one partition
//! of `kafka.probe_topic` in the consumer group `<kafka.group_id>-link-<n>`, assigned rather than
//! subscribed: every shard takes every post, in the `detect` stage's order. For each probe batch
//! it answers what it holds under each post's keys and enters the post, then sends the answers to
//! its own partition of `kafka.answer_topic`. A message on the probe topic that is not a probe
//! batch goes to the dead-letter topic with its reason, and the shard goes on.
//!
//! **Durable state.** The probe offset is committed only once the answers before it are
//! acknowledged. Every `state.snapshot_interval_secs`, and on the way out, the shard waits for
//! every answer sent, commits, and writes its snapshot (`state.dir/link-shard-<n>.bin`) with the
//! next probe offset. A shard that starts again reads the probe topic from its snapshot (or from
//! the beginning, without one: the probe topic's retention then has to cover the window) and
//! takes the probes before its committed offset without answering them: its state is a function
//! of the probes in order, so it is the state it had. Answers sent after the last commit are sent
//! again, and the `detect` stage passes the copies over.

use super::probes::{self, AnswerBatch, ProbeBatch};
use crate::config::Config;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::stages::InvalidInput;
use crate::state::StateStore;
use anyhow::Context;
use chrono::DateTime;
use echotrace_core::link::lexical_shard::{ArrivedProbe, LexicalShard};
use echotrace_core::link::shard::LinkShard;
use echotrace_core::stage::Stage as _;
use echotrace_core::state::{Position, ShardSnapshot};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long start-up waits for the brokers' metadata and the committed offset.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer group of shard `stage.link_shard`: `kafka.group_id` with `-link-<n>` appended.
pub fn group_id(config: &Config) -> String {
    format!("{}-link-{}", config.kafka.group_id, config.stage.link_shard)
}

/// A `link` stage that has started: its probes' address and the handles to wait on.
pub struct Running {
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub api_address: SocketAddr,
    /// The consumer loop; resolves when it has committed and written its last snapshot.
    pub consumer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The HTTP server task.
    pub server: tokio::task::JoinHandle<()>,
}

/// Starts the shard: restores it, assigns the probe partition, and answers until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let shards = config.detector.link_shards.get();
    let index = config.stage.link_shard;
    let link_shard = LinkShard::new(index, shards)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("stage.link_shard = {index} names no shard of detector.link_shards = {shards}"))?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let (api_address, server) =
        http::serve_health(config.http.listen, health, config.http.token()?, shutdown.clone()).await?;
    let publisher = KafkaPublisher::for_round_trips(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    probes::check_partitions(&publisher, &config)?;

    let store = StateStore::for_link_shard(&config).context("cannot create the state folder (state.dir)")?;
    let (shard, start) = restore(store.as_ref(), &config, link_shard);
    let group = group_id(&config);
    let consumer: StreamConsumer = crate::ingest::client_config(
        &config,
        &[
            ("group.id", group.as_str()),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", probes::FETCH_WAIT_MS),
        ],
    )
    .create()
    .map_err(crate::config::without_secret)
    .context("cannot create the Kafka consumer")?;
    let topic = config.kafka.probe_topic.clone();
    let mut partition = TopicPartitionList::new();
    partition.add_partition(&topic, 0);
    let committed = consumer
        .committed_offsets(partition, METADATA_TIMEOUT)
        .context("cannot read the shard's committed probe offset")?
        .find_partition(&topic, 0)
        .and_then(|found| match found.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
        .unwrap_or(0);
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, start.map_or(Offset::Beginning, Offset::Offset))?;
    consumer.assign(&assignment)?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(brokers = %config.kafka.brokers, group = %group, shard = index, shards, probe_topic = %topic, answer_topic = %config.kafka.answer_topic, from = ?start, answered_before = committed, api = %api_address, "linking shard answering");
    let stage = Stage {
        config,
        publisher,
        store,
        metrics,
        shard,
        index,
        committed,
        next_offset: start.unwrap_or(0),
        snapshot_offset: start,
    };
    let consumer = tokio::spawn(stage.consume(consumer, shutdown));
    Ok(Running { api_address, consumer, server })
}

/// The shard in its snapshot and the probe offset it was taken at, or an empty shard read from the
/// beginning (`None`). A snapshot that cannot be used is set aside with the reason.
fn restore(store: Option<&StateStore>, config: &Config, link_shard: LinkShard) -> (LexicalShard, Option<i64>) {
    let empty = || (LexicalShard::new(&config.detector, link_shard), None);
    let Some(store) = store else { return empty() };
    match store.read_shard() {
        Ok(Some(snapshot)) => {
            tracing::info!(snapshot = %store.path().display(), entries = snapshot.shard.len(), offset = snapshot.position.offset, "linking shard restored");
            (snapshot.shard, Some(snapshot.position.offset))
        }
        Ok(None) => empty(),
        Err(error) => {
            let aside = store.path().with_extension("refused");
            let moved = std::fs::rename(store.path(), &aside).is_ok();
            tracing::warn!(snapshot = %store.path().display(), %error, set_aside = moved, "linking shard snapshot refused: reading the probe topic from its beginning");
            empty()
        }
    }
}

/// One linking shard and where it stands on the probe topic.
struct Stage {
    config: Config,
    publisher: KafkaPublisher,
    store: Option<StateStore>,
    metrics: Arc<Metrics>,
    shard: LexicalShard,
    index: u32,
    /// The committed offset at start-up: probes before it were answered by an earlier life.
    committed: i64,
    /// The offset after the last probe taken.
    next_offset: i64,
    /// The offset of the last snapshot written.
    snapshot_offset: Option<i64>,
}

/// A message sent for a probe batch (its answers, or its dead letter), and the offset to commit
/// once it is acknowledged.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<i64>> + Send>>;

impl Stage {
    /// Answers until `shutdown` fires; then commits and writes a last snapshot.
    async fn consume(mut self, consumer: StreamConsumer, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut snapshots = tokio::time::interval(self.config.state.snapshot_interval());
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = consumer.recv() => match message {
                    Ok(message) => {
                        if let Some(sent) = self.take(&message)? {
                            in_flight.push_back(sent);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "consumer error; continuing"),
                },
                Some(acknowledged) = in_flight.next() => self.commit(&consumer, acknowledged?, CommitMode::Async),
                _ = snapshots.tick() => self.checkpoint(&consumer, &mut in_flight).await?,
                _ = shutdown.recv() => {
                    tracing::info!("shutting down: committing and writing the shard's snapshot");
                    return self.checkpoint(&consumer, &mut in_flight).await;
                }
            }
        }
    }

    /// Takes one message of the probe topic: answers its posts and enters them, and returns the
    /// sending of the answers (none while catching up); a message that is not a probe batch is
    /// dead-lettered.
    fn take(&mut self, message: &BorrowedMessage<'_>) -> anyhow::Result<Option<InFlight>> {
        self.metrics.messages_consumed.inc();
        let offset = message.offset();
        self.next_offset = offset + 1;
        let payload = message.payload().unwrap_or_default();
        let delivery = match probes::decode::<ProbeBatch>(payload, "probe batch") {
            Ok(ProbeBatch { asker, batch, posts }) => {
                let probes = posts
                    .into_iter()
                    .map(|post| ArrivedProbe {
                        probe: post.probe,
                        arrived_at: post.arrived_at_ms.and_then(DateTime::from_timestamp_millis),
                    })
                    .collect();
                let answers = self.shard.process(probes, 1);
                self.metrics.window_posts.set(self.shard.metrics().fingerprints as i64);
                if offset < self.committed {
                    return Ok(None);
                }
                self.metrics.probes_answered.inc_by(answers.len() as u64);
                let answer = AnswerBatch { asker, batch, shard: self.index, answers };
                self.publisher.exchange(&self.config.kafka.answer_topic, self.index as i32, &probes::encode(&answer))?
            }
            // Dead-lettered by an earlier life.
            Err(_) if offset < self.committed => return Ok(None),
            Err(error) => {
                let error = InvalidInput::Exchange(error);
                let source = Source { topic: message.topic().to_owned(), partition: message.partition(), offset };
                tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, offset), kind = error.kind(), %error, "dead-lettering message");
                self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
                self.publisher.dead_letter(message.key(), payload, &source, &error)?
            }
        };
        Ok(Some(Box::pin(acknowledged(delivery, offset + 1))))
    }

    /// Commits the probe offset `offset`, below which every answer is acknowledged.
    fn commit(&self, consumer: &StreamConsumer, offset: i64, mode: CommitMode) {
        let mut offsets = TopicPartitionList::new();
        let _ = offsets.add_partition_offset(&self.config.kafka.probe_topic, 0, Offset::Offset(offset));
        match consumer.commit(&offsets, mode) {
            Ok(()) => self.metrics.checkpoints.inc(),
            Err(error) => {
                // The next commit carries this offset's successor; until then a restart answers
                // a little again, which the `detect` stage passes over.
                tracing::warn!(%error, "offset commit failed");
                self.metrics.commit_failures.inc();
            }
        }
    }

    /// Waits for every answer sent, commits, and writes the shard's snapshot at the next offset.
    async fn checkpoint(
        &mut self,
        consumer: &StreamConsumer,
        in_flight: &mut FuturesOrdered<InFlight>,
    ) -> anyhow::Result<()> {
        let mut last = None;
        while let Some(acknowledged) = in_flight.next().await {
            last = Some(acknowledged?);
        }
        if let Some(offset) = last {
            self.commit(consumer, offset, CommitMode::Sync);
        }
        let Some(store) = self.store.as_ref().filter(|_| self.snapshot_offset != Some(self.next_offset)) else {
            return Ok(());
        };
        let started = Instant::now();
        let position =
            Position { source: self.config.kafka.probe_topic.clone(), partition: 0, offset: self.next_offset };
        let bytes = store.write_shard(&ShardSnapshot { shard: self.shard.clone(), position })?;
        self.metrics.observe_snapshot_written(bytes, started.elapsed());
        self.snapshot_offset = Some(self.next_offset);
        Ok(())
    }
}

/// Resolves to `next_offset` once `delivery` is acknowledged; fails when the brokers refused it.
async fn acknowledged(delivery: DeliveryFuture, next_offset: i64) -> anyhow::Result<i64> {
    match delivery.await {
        Ok(Ok(_)) => Ok(next_offset),
        Ok(Err((error, _))) => Err(anyhow::Error::new(error).context("the brokers refused the shard's answers")),
        Err(_) => anyhow::bail!("the producer dropped the shard's answers"),
    }
}
