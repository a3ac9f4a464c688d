//! The `score` stage (`stage.role = "score"`): one owner of cascades, out of the `detect` process,
//! fed the scorer's records over Kafka.
//!
//! With `stage.score_stage`, the `detect` process keeps only the scorer's router
//! ([`echotrace_core::score::router`]): after each batch it sends every owner one
//! [`OwnerMessage::Records`] on the owner's partition of `kafka.owner_topic` (the records of its
//! cascades, none or many, and the number of the batch's last post). Owner `stage.score_owner` of
//! `alerting.cascade_owners` reads that partition, assigned rather than subscribed, in the
//! consumer group `<kafka.group_id>-score-<n>`. It processes its records in order
//! ([`CascadeOwner::receive`]); a merge of one of its cascades into another owner's sends a
//! [`OwnerMessage::Handover`] to that owner's partition, and a record waiting for a handover
//! holds the records after it until the handover comes. After each message it sends its alert
//! events and how far it is through to the `gate` stage ([`GateMessage`] on `kafka.gate_topic`).
//! A message that is not an owner message goes to the dead-letter topic with its reason, and the
//! owner goes on.
//!
//! **Durable state.** As a linking shard's ([`super::partition`]): the offset is committed once what
//! the messages before it sent is acknowledged; every `state.snapshot_interval_secs`, and on the
//! way out, the owner waits for what it sent, commits, and writes its snapshot
//! (`state.dir/score-owner-<n>.bin`) with the next offset. An owner that starts again reads its
//! partition from its snapshot (from the beginning without one) and takes the messages before
//! its committed offset without sending: its state is a function of its partition's messages in
//! order. What it sent after the last commit it sends again; the gate and the other owners pass
//! the copies over by post number.

use super::partition::{AcknowledgedStage, METADATA_TIMEOUT, PartitionReader, Probes, Taken, run_acknowledged};
use super::probes;
use super::{InvalidInput, Running};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::KafkaPublisher;
use crate::state::StateStore;
use anyhow::Context;
use echotrace_core::score::ScorerStats;
use echotrace_core::score::gate::GateEntry;
use echotrace_core::score::owner::{CascadeOwner, Handover, Lifecycle, OwnerOutput};
use echotrace_core::score::router::OwnerRecord;
use echotrace_core::state::PartitionStage;
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A message on an owner's partition of `kafka.owner_topic`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OwnerMessage {
    /// The router's records for this owner from one batch of posts, and the number of the batch's
    /// last post: every record of the posts up to it is in this message or came before.
    Records {
        /// The number of the batch's last post.
        through: u64,
        /// The records, in order.
        records: Vec<OwnerRecord>,
    },
    /// A handover from the owner of a cascade merged into one of this owner's.
    Handover(Box<Handover>),
}

/// A message on `kafka.gate_topic`: what one owner made of one message it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateMessage {
    /// The owner.
    pub owner: u32,
    /// The number of the last post whose records the owner has all processed.
    pub through: u64,
    /// Its alert events, tagged with post and step.
    pub entries: Vec<GateEntry>,
}

/// The consumer group of owner `stage.score_owner`: `kafka.group_id` with `-score-<n>` appended.
pub fn group_id(config: &Config) -> String {
    format!("{}-score-{}", config.kafka.group_id, config.stage.score_owner)
}

/// Checks that `kafka.owner_topic` has one partition per owner and `kafka.gate_topic` one.
pub fn check_partitions(publisher: &KafkaPublisher, config: &Config) -> anyhow::Result<()> {
    let owners = config.alerting.cascade_owners.max(1);
    let partitions = publisher.partitions(&config.kafka.owner_topic, METADATA_TIMEOUT)?;
    anyhow::ensure!(
        partitions == owners as i32,
        "kafka.owner_topic {} has {partitions} partitions: it needs one per owner of cascades \
         (alerting.cascade_owners = {owners})",
        config.kafka.owner_topic
    );
    let gate = publisher.partitions(&config.kafka.gate_topic, METADATA_TIMEOUT)?;
    anyhow::ensure!(
        gate == 1,
        "kafka.gate_topic {} has {gate} partitions: it needs exactly 1, the one gate every owner's events go through",
        config.kafka.gate_topic
    );
    Ok(())
}

/// The `detect` stage's side: the scorer's records of a batch sent to their owners.
pub struct OwnerRecords {
    topic: String,
    owners: usize,
}

impl OwnerRecords {
    /// Records for the owners of `config`, on `kafka.owner_topic`.
    pub fn new(config: &Config) -> OwnerRecords {
        OwnerRecords { topic: config.kafka.owner_topic.clone(), owners: config.alerting.cascade_owners.max(1) }
    }

    /// Sends every owner its records of a batch (none for some), with the number of the batch's
    /// last post, so that each owner, and the gate after them, knows it has had them all.
    pub fn send(
        &self,
        publisher: &KafkaPublisher,
        records: Vec<(usize, OwnerRecord)>,
    ) -> Result<Vec<DeliveryFuture>, KafkaError> {
        let Some(through) = records.iter().map(|(_, record)| record.seq).max() else { return Ok(Vec::new()) };
        let mut by_owner: Vec<Vec<OwnerRecord>> = vec![Vec::new(); self.owners];
        for (owner, record) in records {
            by_owner[owner].push(record);
        }
        by_owner
            .into_iter()
            .enumerate()
            .map(|(owner, records)| {
                let message = probes::encode(&OwnerMessage::Records { through, records });
                publisher.exchange(&self.topic, owner as i32, &message)
            })
            .collect()
    }
}

/// Starts the owner: restores it, assigns its partition, and takes its messages until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let owners = config.alerting.cascade_owners.max(1);
    let index = config.stage.score_owner;
    anyhow::ensure!(
        (index as usize) < owners,
        "stage.score_owner = {index} names no owner of alerting.cascade_owners = {owners}"
    );
    let lifecycle = Lifecycle::new(config.alerting.rules()?, &config.alerting.score_config());
    let Probes { metrics, ready, api_address, server } = Probes::serve(&config, &shutdown).await?;
    let publisher = KafkaPublisher::for_round_trips(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    check_partitions(&publisher, &config)?;

    let store = StateStore::for_owner(&config).context("cannot create the state folder (state.dir)")?;
    let group = group_id(&config);
    let topic = config.kafka.owner_topic.clone();
    let (consumer, reader, restored) = PartitionReader::open::<CascadeOwner>(
        &config,
        &group,
        (&topic, index as i32),
        store,
        PartitionStage::CascadeOwner,
        metrics.clone(),
    )?;
    if let Some(owner) = &restored {
        tracing::info!(cascades = owner.tracked_cascades(), offset = reader.start(), "owner of cascades restored");
    }
    let mut owner = restored.unwrap_or_default();
    owner.keep_rules(&lifecycle.rules);
    ready.store(true, Ordering::SeqCst);
    tracing::info!(brokers = %config.kafka.brokers, group = %group, owner = index, owners, owner_topic = %topic, gate_topic = %config.kafka.gate_topic, from = ?reader.start(), sent_before = reader.committed(), api = %api_address, "owner of cascades taking its records");
    let snapshot_interval = config.state.snapshot_interval();
    let stage = Owner { config, lifecycle, publisher, metrics, owner, index, owners };
    let consumer = tokio::spawn(run_acknowledged(stage, consumer, reader, snapshot_interval, shutdown));
    Ok(Running { api_address, consumer, server })
}

/// One owner of cascades, and where what it makes goes.
struct Owner {
    config: Config,
    lifecycle: Lifecycle,
    publisher: KafkaPublisher,
    metrics: Arc<Metrics>,
    owner: CascadeOwner,
    index: u32,
    owners: usize,
}

impl AcknowledgedStage for Owner {
    type State = CascadeOwner;

    /// Processes a message's records or handover; sends the handovers it makes to the survivors'
    /// owners and its events to the gate (none while catching up).
    fn take(&mut self, payload: &[u8], again: bool) -> anyhow::Result<Taken> {
        let output = match probes::decode::<OwnerMessage>(payload, "owner message") {
            Ok(OwnerMessage::Records { through, records }) => self.owner.receive(&self.lifecycle, through, records),
            Ok(OwnerMessage::Handover(handover)) => self.owner.receive_handover(&self.lifecycle, *handover),
            Err(error) => return Ok(Taken::Invalid(InvalidInput::Exchange(error))),
        };
        self.metrics.observe_scorer(ScorerStats {
            forgotten_early: self.owner.forgotten_early(),
            tracked_cascades: self.owner.tracked_cascades(),
        });
        if again {
            return Ok(Taken::Sent(Vec::new()));
        }
        let OwnerOutput { through, entries, handovers } = output;
        let mut deliveries = Vec::with_capacity(handovers.len() + 1);
        for handover in handovers {
            let to = handover.into.partition(self.owners) as i32;
            let message = probes::encode(&OwnerMessage::Handover(Box::new(handover)));
            deliveries.push(self.publisher.exchange(&self.config.kafka.owner_topic, to, &message)?);
        }
        let message = probes::encode(&GateMessage { owner: self.index, through, entries });
        deliveries.push(self.publisher.exchange(&self.config.kafka.gate_topic, 0, &message)?);
        Ok(Taken::Sent(deliveries))
    }

    fn state(&self) -> &CascadeOwner {
        &self.owner
    }

    fn publisher(&self) -> &KafkaPublisher {
        &self.publisher
    }
}
