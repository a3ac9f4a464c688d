//! The `gate` stage (`stage.role = "gate"`): the paging gate after the owners of cascades, and
//! the one writer of alerts.
//!
//! It reads the one partition of `kafka.gate_topic`, assigned rather than subscribed, in the
//! consumer group `<kafka.group_id>-gate`: every owner's alert events and how far each owner is
//! through ([`super::owner::GateMessage`]). [`PageGate`] passes a post's events once every owner
//! is through with it, in the order one scorer makes them, through the circuit breaker; the
//! events passed are what `whole` and `detect` write and send: rows of `alerts/`, messages on
//! `kafka.alerts_topic`, notices to Alertmanager, the alert metrics. A message that is not a gate
//! message goes to the dead-letter topic with its reason, and the gate goes on.
//!
//! **Durable state.** Every `output.flush_interval_ms` the gate writes its rows, waits for what
//! it sent to Kafka, and commits; every `state.snapshot_interval_secs`, and on the way out, it
//! writes its snapshot (`state.dir/gate.bin`: the gate, the alerts firing, the next offset)
//! before it commits. A gate that starts again reads from its snapshot (from the beginning
//! without one) and takes the messages before its committed offset without writing or sending:
//! its state is a function of the messages in order. What it wrote after the last commit it
//! writes again (at least once, as every stage after a crash); the alerts firing at its snapshot
//! go on being sent to Alertmanager.

use super::owner::{GateMessage, committed_offset};
use super::probes::{self, InvalidExchange};
use crate::alerting::{AlertDispatcher, AlertNotice};
use crate::config::Config;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::sinks::parquet::ParquetSink;
use crate::stages::InvalidInput;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::score::alerts::{AlertEvent, AlertState};
use echotrace_core::score::breaker::FLOOD_RULE;
use echotrace_core::score::gate::PageGate;
use echotrace_core::score::rules::RuleSet;
use echotrace_core::state::{PartitionSnapshot, PartitionStage, Position};
use futures::future::try_join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long start-up waits for the brokers' metadata and the committed offset.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer group of the gate: `kafka.group_id` with `-gate` appended.
pub fn group_id(config: &Config) -> String {
    format!("{}-gate", config.kafka.group_id)
}

/// What the gate remembers: the gate, and the alerts firing now (their latest event), which a
/// restarted gate goes on sending to Alertmanager.
#[derive(Clone, Default, Serialize, Deserialize)]
struct GateState {
    gate: PageGate,
    firing: BTreeMap<String, AlertEvent>,
}

impl GateState {
    /// Keeps `event` as its alert's latest while the alert fires.
    fn follow(&mut self, event: &AlertEvent) {
        match event.state {
            AlertState::Firing => self.firing.insert(event.alert_id.clone(), event.clone()),
            AlertState::Resolved => self.firing.remove(&event.alert_id),
        };
    }
}

/// A gate process that has started: its probes' address and the handles to wait on.
pub struct Running {
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub api_address: SocketAddr,
    /// The consumer loop; resolves when it has committed and written its last snapshot.
    pub consumer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The HTTP server task.
    pub server: tokio::task::JoinHandle<()>,
}

/// Starts the gate: restores it, assigns the gate partition, and passes events until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let rules = config.alerting.rules()?;
    let owners = config.alerting.cascade_owners.max(1);
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let (api_address, server) =
        http::serve_health(config.http.listen, health, config.http.token()?, shutdown.clone()).await?;
    let publisher = KafkaPublisher::new(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    super::owner::check_partitions(&publisher, &config)?;
    let sink = ParquetSink::new(&config.output.dir)?;

    let store = StateStore::for_gate(&config).context("cannot create the state folder (state.dir)")?;
    let (mut state, start) = restore(store.as_ref(), &config, owners);
    state.gate.resume(&rules, config.alerting.max_pages_per_hour, owners);
    state.firing.retain(|_, event| event.rule == FLOOD_RULE || rules.rules.iter().any(|rule| rule.name == event.rule));
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
    let topic = config.kafka.gate_topic.clone();
    let committed = committed_offset(&consumer, &topic, 0)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, start.map_or(Offset::Beginning, Offset::Offset))?;
    consumer.assign(&assignment)?;

    let notices = dispatcher(&config, api_address, &metrics);
    for event in state.firing.values() {
        metrics.restore_firing(event);
        if let Some((sender, _)) = &notices {
            sender
                .send(AlertNotice { event: event.clone(), produced_at: None })
                .await
                .context("the dispatcher stopped")?;
        }
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!(brokers = %config.kafka.brokers, group = %group, owners, gate_topic = %topic, from = ?start, written_before = committed, api = %api_address, "paging gate passing the owners' alert events");
    let stage = Stage {
        config,
        rules,
        publisher,
        sink,
        store,
        metrics,
        state,
        committed,
        next_offset: start.unwrap_or(0),
        snapshot_offset: start,
        last_snapshot: Instant::now(),
        deliveries: Vec::new(),
        dirty: false,
    };
    let consumer = tokio::spawn(async move {
        let (sender, dispatcher) = notices.unzip();
        let outcome = stage.consume(consumer, sender.as_ref(), shutdown).await;
        // Closing the channel lets the dispatcher deliver what is pending and stop.
        drop(sender);
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        outcome
    });
    Ok(Running { api_address, consumer, server })
}

/// The Alertmanager dispatcher `alerting.alertmanager_url` asks for, and the channel to it.
fn dispatcher(
    config: &Config,
    api_address: SocketAddr,
    metrics: &Arc<Metrics>,
) -> Option<(mpsc::Sender<AlertNotice>, tokio::task::JoinHandle<()>)> {
    if config.alerting.alertmanager_url.is_empty() {
        return None;
    }
    let public_url = match config.alerting.public_url.as_str() {
        "" => format!("http://{api_address}"),
        url => url.to_owned(),
    };
    let resend = Duration::from_millis(config.alerting.resend_interval_ms.max(100));
    let dispatcher = AlertDispatcher::new(&config.alerting.alertmanager_url, &public_url, resend, metrics.clone());
    let (sender, receiver) = mpsc::channel(1024);
    Some((sender, tokio::spawn(dispatcher.run(receiver))))
}

/// The gate in its snapshot and the offset it was taken at, or an empty gate read from the
/// beginning (`None`). A snapshot that cannot be used is set aside with the reason.
fn restore(store: Option<&StateStore>, config: &Config, owners: usize) -> (GateState, Option<i64>) {
    let empty = || {
        let gate = PageGate::new(config.alerting.max_pages_per_hour, owners);
        (GateState { gate, firing: BTreeMap::new() }, None)
    };
    let Some(store) = store else { return empty() };
    match store.read_partition::<GateState>(PartitionStage::PagingGate) {
        Ok(Some(snapshot)) => {
            tracing::info!(snapshot = %store.path().display(), firing = snapshot.state.firing.len(), offset = snapshot.position.offset, "paging gate restored");
            (snapshot.state, Some(snapshot.position.offset))
        }
        Ok(None) => empty(),
        Err(error) => {
            let aside = store.path().with_extension("refused");
            let moved = std::fs::rename(store.path(), &aside).is_ok();
            tracing::warn!(snapshot = %store.path().display(), %error, set_aside = moved, "gate snapshot refused: reading the gate topic from its beginning");
            empty()
        }
    }
}

/// The gate and where it stands on its partition.
struct Stage {
    config: Config,
    rules: RuleSet,
    publisher: KafkaPublisher,
    sink: ParquetSink,
    store: Option<StateStore>,
    metrics: Arc<Metrics>,
    state: GateState,
    /// The committed offset at start-up: the events of the messages before it were written by an
    /// earlier life.
    committed: i64,
    /// The offset after the last message taken.
    next_offset: i64,
    /// The offset of the last snapshot written.
    snapshot_offset: Option<i64>,
    last_snapshot: Instant,
    /// Alert events and dead letters sent to Kafka since the last checkpoint.
    deliveries: Vec<DeliveryFuture>,
    /// Whether anything was taken since the last checkpoint.
    dirty: bool,
}

impl Stage {
    /// Passes events until `shutdown` fires; then writes, commits and writes a last snapshot.
    async fn consume(
        mut self,
        consumer: StreamConsumer,
        notices: Option<&mpsc::Sender<AlertNotice>>,
        mut shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let mut checkpoints = tokio::time::interval(self.config.output.flush_interval());
        checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = consumer.recv() => match message {
                    Ok(message) => {
                        for notice in self.take(&message)? {
                            if let Some(notices) = notices {
                                notices.send(notice).await.context("the dispatcher stopped")?;
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "consumer error; continuing"),
                },
                _ = checkpoints.tick() => self.checkpoint(&consumer, false).await?,
                _ = shutdown.recv() => {
                    tracing::info!("shutting down: writing, committing and writing the gate's snapshot");
                    return self.checkpoint(&consumer, true).await;
                }
            }
        }
    }

    /// Takes one message of the gate topic: passes what every owner is through with, and returns
    /// the notices for Alertmanager (none while catching up); a message that is not a gate message
    /// is dead-lettered.
    fn take(&mut self, message: &BorrowedMessage<'_>) -> anyhow::Result<Vec<AlertNotice>> {
        self.metrics.messages_consumed.inc();
        let offset = message.offset();
        self.next_offset = offset + 1;
        self.dirty = true;
        let payload = message.payload().unwrap_or_default();
        let passed = match probes::decode::<GateMessage>(payload, "gate message") {
            Ok(GateMessage { owner, through, entries })
                if (owner as usize) < self.config.alerting.cascade_owners.max(1) =>
            {
                self.state.gate.take(owner as usize, through, entries);
                let passed = self.state.gate.release(&self.rules);
                self.metrics.gate_through_post.set(self.state.gate.through() as i64);
                passed
            }
            Ok(GateMessage { owner, .. }) if offset >= self.committed => {
                let reason = format!("owner {owner} is not one of alerting.cascade_owners");
                self.dead_letter(message, InvalidExchange::Malformed { what: "gate message", reason })?;
                return Ok(Vec::new());
            }
            Ok(_) => return Ok(Vec::new()),
            Err(_) if offset < self.committed => return Ok(Vec::new()),
            Err(error) => {
                self.dead_letter(message, error)?;
                return Ok(Vec::new());
            }
        };
        passed.iter().for_each(|event| self.state.follow(event));
        if offset < self.committed {
            return Ok(Vec::new());
        }
        self.deliveries.extend(self.publisher.alerts(&passed)?);
        let mut notices = Vec::with_capacity(passed.len());
        for event in passed {
            self.metrics.observe_alert(&event);
            self.sink.push_alert(event.clone());
            notices.push(AlertNotice { event, produced_at: None });
        }
        Ok(notices)
    }

    /// Sends `message` to the dead-letter topic with `error`, counted.
    fn dead_letter(&mut self, message: &BorrowedMessage<'_>, error: impl Into<InvalidInput>) -> anyhow::Result<()> {
        let error = error.into();
        let source =
            Source { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, source.offset), kind = error.kind(), %error, "dead-lettering message");
        self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
        let payload = message.payload().unwrap_or_default();
        self.deliveries.push(self.publisher.dead_letter(message.key(), payload, &source, &error)?);
        Ok(())
    }

    /// Writes the alert rows, waits for what was sent to Kafka, writes the snapshot when one is
    /// due (or `last`), and commits the next offset.
    async fn checkpoint(&mut self, consumer: &StreamConsumer, last: bool) -> anyhow::Result<()> {
        if !self.dirty && !last {
            return Ok(());
        }
        let rows = self.sink.flush()?;
        self.metrics.rows_written.inc_by(rows as u64);
        let outcomes = try_join_all(self.deliveries.drain(..))
            .await
            .map_err(|_| anyhow::anyhow!("the producer dropped an alert event"))?;
        if let Some((error, _)) = outcomes.into_iter().find_map(Result::err) {
            return Err(anyhow::Error::new(error).context("the brokers refused an alert event"));
        }
        self.dirty = false;
        let due = last || self.last_snapshot.elapsed() >= self.config.state.snapshot_interval();
        if let Some(store) = self.store.as_ref().filter(|_| due && self.snapshot_offset != Some(self.next_offset)) {
            let started = Instant::now();
            let position =
                Position { source: self.config.kafka.gate_topic.clone(), partition: 0, offset: self.next_offset };
            let bytes = store
                .write_partition(PartitionStage::PagingGate, &PartitionSnapshot { state: &self.state, position })?;
            self.metrics.observe_snapshot_written(bytes, started.elapsed());
            self.snapshot_offset = Some(self.next_offset);
            self.last_snapshot = Instant::now();
        }
        if self.next_offset > 0 {
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(&self.config.kafka.gate_topic, 0, Offset::Offset(self.next_offset))?;
            match consumer.commit(&offsets, CommitMode::Sync) {
                Ok(()) => self.metrics.checkpoints.inc(),
                Err(error) => {
                    // The rows are durable: a restart before the next commit writes a few again.
                    tracing::warn!(%error, "offset commit failed");
                    self.metrics.commit_failures.inc();
                }
            }
        }
        Ok(())
    }
}
