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
//! **Durable state** ([`super::partition`]). The probe offset is committed only once the answers
//! before it are acknowledged. Every `state.snapshot_interval_secs`, and on the way out, the shard
//! waits for every answer sent, commits, and writes its snapshot (`state.dir/link-shard-<n>.bin`)
//! with the next probe offset. A shard that starts again reads the probe topic from its snapshot (or from
//! the beginning, without one: the probe topic's retention then has to cover the window) and
//! takes the probes before its committed offset without answering them: its state is a function
//! of the probes in order, so it is the state it had. Answers sent after the last commit are sent
//! again, and the `detect` stage passes the copies over.

use super::partition::{AcknowledgedStage, METADATA_TIMEOUT, PartitionReader, Probes, Taken, run_acknowledged};
use super::probes::{self, AnswerBatch, ProbeBatch};
use super::{InvalidInput, Running};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sinks::kafka::KafkaPublisher;
use crate::state::StateStore;
use anyhow::Context;
use chrono::DateTime;
use echotrace_core::link::lexical_shard::{ArrivedProbe, LexicalShard};
use echotrace_core::link::shard::LinkShard;
use echotrace_core::stage::Stage as _;
use echotrace_core::state::PartitionStage;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The consumer group of shard `stage.link_shard`: `kafka.group_id` with `-link-<n>` appended.
pub fn group_id(config: &Config) -> String {
    format!("{}-link-{}", config.kafka.group_id, config.stage.link_shard)
}

/// Starts the shard: restores it, assigns the probe partition, and answers until `shutdown`.
pub async fn start(config: Config, shutdown: Shutdown) -> anyhow::Result<Running> {
    let shards = config.detector.link_shards.get();
    let index = config.stage.link_shard;
    let link_shard = LinkShard::new(index, shards)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("stage.link_shard = {index} names no shard of detector.link_shards = {shards}"))?;
    let Probes { metrics, ready, api_address, server } = Probes::serve(&config, &shutdown).await?;
    let publisher = KafkaPublisher::for_round_trips(&config.kafka).context("cannot create the Kafka producer")?;
    publisher.check_topics(METADATA_TIMEOUT).context("cannot confirm that the output topics exist")?;
    probes::check_partitions(&publisher, &config)?;

    let store = StateStore::for_link_shard(&config).context("cannot create the state folder (state.dir)")?;
    let group = group_id(&config);
    let topic = config.kafka.probe_topic.clone();
    let (consumer, reader, restored) = PartitionReader::open::<LexicalShard>(
        &config,
        &group,
        (&topic, 0),
        store,
        PartitionStage::LinkShard,
        metrics.clone(),
    )?;
    if let Some(shard) = &restored {
        tracing::info!(entries = shard.len(), offset = reader.start(), "linking shard restored");
    }
    let shard = restored.unwrap_or_else(|| LexicalShard::new(&config.detector, link_shard));
    ready.store(true, Ordering::SeqCst);
    tracing::info!(brokers = %config.kafka.brokers, group = %group, shard = index, shards, probe_topic = %topic, answer_topic = %config.kafka.answer_topic, from = ?reader.start(), answered_before = reader.committed(), api = %api_address, "linking shard answering");
    let snapshot_interval = config.state.snapshot_interval();
    let stage = Shard { answer_topic: config.kafka.answer_topic.clone(), publisher, metrics, shard, index };
    let consumer = tokio::spawn(run_acknowledged(stage, consumer, reader, snapshot_interval, shutdown));
    Ok(Running { api_address, consumer, server })
}

/// One linking shard: what it holds, and where its answers go.
struct Shard {
    answer_topic: String,
    publisher: KafkaPublisher,
    metrics: Arc<Metrics>,
    shard: LexicalShard,
    index: u32,
}

impl AcknowledgedStage for Shard {
    type State = LexicalShard;

    /// Answers a probe batch's posts and enters them; sends the answers to the shard's partition
    /// of the answer topic (none while catching up).
    fn take(&mut self, payload: &[u8], again: bool) -> anyhow::Result<Taken> {
        let ProbeBatch { asker, batch, posts } = match probes::decode::<ProbeBatch>(payload, "probe batch") {
            Ok(batch) => batch,
            Err(error) => return Ok(Taken::Invalid(InvalidInput::Exchange(error))),
        };
        let probes = posts
            .into_iter()
            .map(|post| ArrivedProbe {
                probe: post.probe,
                arrived_at: post.arrived_at_ms.and_then(DateTime::from_timestamp_millis),
            })
            .collect();
        let answers = self.shard.process(probes, 1);
        self.metrics.window_posts.set(self.shard.metrics().fingerprints as i64);
        if again {
            return Ok(Taken::Sent(Vec::new()));
        }
        self.metrics.probes_answered.inc_by(answers.len() as u64);
        let answer = AnswerBatch { asker, batch, shard: self.index, answers };
        let delivery = self.publisher.exchange(&self.answer_topic, self.index as i32, &probes::encode(&answer))?;
        Ok(Taken::Sent(vec![delivery]))
    }

    fn state(&self) -> &LexicalShard {
        &self.shard
    }

    fn publisher(&self) -> &KafkaPublisher {
        &self.publisher
    }
}
