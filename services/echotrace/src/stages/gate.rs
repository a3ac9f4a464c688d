//! The `gate` stage (`stage.role = "gate"`): the paging gate after the owners of cascades, and
//! the one writer of alerts.
//!
//! It reads the one partition of `kafka.gate_topic`, assigned rather than subscribed, in the
//! consumer group `<kafka.group_id>-gate`: every owner's alert events and how far each owner is
//! through ([`super::score::GateMessage`]). [`PageGate`] passes a post's events once every owner
//! is through with it, in the order one scorer makes them, through the circuit breaker; the
//! events passed are what `whole` and `detect` write and send: rows of `alerts/`, messages on
//! `kafka.alerts_topic`, notices to Alertmanager, the alert metrics. A message that is not a gate
//! message goes to the dead-letter topic with its reason, and the gate goes on.
//!
//! **Durable state** ([`super::partition`]). Every `output.flush_interval_ms` the gate writes its rows, waits for what
//! it sent to Kafka, and commits; every `state.snapshot_interval_secs`, and on the way out, it
//! writes its snapshot (`state.dir/gate.bin`: the gate, the alerts firing, the next offset)
//! before it commits. A gate that starts again reads from its snapshot (from the beginning
//! without one) and takes the messages before its committed offset without writing or sending:
//! its state is a function of the messages in order. What it wrote after the last commit it
//! writes again (at least once, as every stage after a crash); the alerts firing at its snapshot
//! go on being sent to Alertmanager.

use super::partition::{METADATA_TIMEOUT, PartitionReader, Probes};
use super::probes::{self, InvalidExchange};
use super::score::GateMessage;
use super::{InvalidInput, Running};
use crate::alerting::{AlertDispatcher, AlertNotice};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::KafkaPublisher;
use crate::sinks::parquet::ParquetSink;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::score::alerts::{AlertEvent, AlertState};
use echotrace_core::score::breaker::FLOOD_RULE;
use echotrace_core::score::gate::PageGate;
use echotrace_core::score::rules::RuleSet;
use echotrace_core::state::PartitionStage;
use futures::future::try_join_all;
use rdkafka::consumer::{CommitMode, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::DeliveryFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::mpsc;

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

/// Starts the gate: restores it, assigns the gate partition, and passes events until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let rules = config.alerting.rules()?;
    let owners = config.alerting.cascade_owners.max(1);
    let Probes { metrics, ready, api_address, server } = Probes::serve(&config, &shutdown).await?;
    let publisher = KafkaPublisher::new(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    super::score::check_partitions(&publisher, &config)?;
    let sink = ParquetSink::new(&config.output.dir)?;

    let store = StateStore::for_gate(&config).context("cannot create the state folder (state.dir)")?;
    let group = group_id(&config);
    let topic = config.kafka.gate_topic.clone();
    let (consumer, reader, restored) = PartitionReader::open::<GateState>(
        &config,
        &group,
        (&topic, 0),
        store,
        PartitionStage::PagingGate,
        metrics.clone(),
    )?;
    if let Some(state) = &restored {
        tracing::info!(firing = state.firing.len(), offset = reader.start(), "paging gate restored");
    }
    let mut state = restored.unwrap_or_else(|| GateState {
        gate: PageGate::new(config.alerting.max_pages_per_hour, owners),
        firing: BTreeMap::new(),
    });
    state.gate.resume(&rules, config.alerting.max_pages_per_hour, owners);
    state.firing.retain(|_, event| event.rule == FLOOD_RULE || rules.rules.iter().any(|rule| rule.name == event.rule));

    // The alerts firing at the snapshot go on being sent, with their first startsAt.
    let (notices, dispatcher) = AlertDispatcher::start(&config, api_address, metrics.clone()).unzip();
    for event in state.firing.values() {
        metrics.restore_firing(event);
        if let Some(notices) = &notices {
            let notice = AlertNotice { event: event.clone(), produced_at: None };
            notices.send(notice).await.context("the dispatcher stopped")?;
        }
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!(brokers = %config.kafka.brokers, group = %group, owners, gate_topic = %topic, from = ?reader.start(), written_before = reader.committed(), api = %api_address, "paging gate passing the owners' alert events");
    let stage = Gate {
        config,
        rules,
        publisher,
        sink,
        metrics,
        state,
        reader,
        last_snapshot: Instant::now(),
        deliveries: Vec::new(),
        dirty: false,
    };
    let consumer = tokio::spawn(async move {
        let outcome = stage.consume(consumer, notices.as_ref(), shutdown).await;
        // Closing the channel lets the dispatcher deliver what is pending and stop.
        drop(notices);
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        outcome
    });
    Ok(Running { api_address, consumer, server })
}

/// The gate and where it stands on its partition.
struct Gate {
    config: Config,
    rules: RuleSet,
    publisher: KafkaPublisher,
    sink: ParquetSink,
    metrics: Arc<Metrics>,
    state: GateState,
    reader: PartitionReader,
    last_snapshot: Instant,
    /// Alert events and dead letters sent to Kafka since the last checkpoint.
    deliveries: Vec<DeliveryFuture>,
    /// Whether anything was taken since the last checkpoint.
    dirty: bool,
}

impl Gate {
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
    /// of one of the owners is dead-lettered.
    fn take(&mut self, message: &BorrowedMessage<'_>) -> anyhow::Result<Vec<AlertNotice>> {
        let again = self.reader.take(message);
        self.dirty = true;
        let owners = self.config.alerting.cascade_owners.max(1);
        let decoded = probes::decode::<GateMessage>(message.payload().unwrap_or_default(), "gate message");
        let passed = match decoded {
            Ok(GateMessage { owner, through, entries }) if (owner as usize) < owners => {
                self.state.gate.take(owner as usize, through, entries);
                let passed = self.state.gate.release(&self.rules);
                self.metrics.gate_through_post.set(self.state.gate.through() as i64);
                passed
            }
            _ if again => return Ok(Vec::new()),
            Ok(GateMessage { owner, .. }) => {
                let reason = format!("owner {owner} is not one of alerting.cascade_owners = {owners}");
                let error = InvalidInput::Exchange(InvalidExchange::Malformed { what: "gate message", reason });
                self.deliveries.push(self.reader.dead_letter(&self.publisher, message, &error)?);
                return Ok(Vec::new());
            }
            Err(error) => {
                let error = InvalidInput::Exchange(error);
                self.deliveries.push(self.reader.dead_letter(&self.publisher, message, &error)?);
                return Ok(Vec::new());
            }
        };
        passed.iter().for_each(|event| self.state.follow(event));
        if again {
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
        if last || self.last_snapshot.elapsed() >= self.config.state.snapshot_interval() {
            self.reader.snapshot(&self.state)?;
            self.last_snapshot = Instant::now();
        }
        // The rows are durable: a restart before the next commit writes a few again.
        self.reader.commit(consumer, None, CommitMode::Sync);
        Ok(())
    }
}
