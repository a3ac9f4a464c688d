//! The exchange between the `detect` stage and the `link` stage (`stage.link_stage`): what crosses
//! `kafka.probe_topic` and `kafka.answer_topic`, and the `detect` stage's side of it
//! ([`LinkShards`]).
//!
//! The `detect` stage links posts in one order across input partitions
//! ([`crate::ingest::ordering`]). For each batch it sends one [`ProbeBatch`]: what a linking shard
//! needs of each post ([`LinkProbe`], some 115 bytes) and when its message arrived. The probe
//! topic has one partition, so every shard takes every post in that order, as the shards of one
//! process do ([`echotrace_core::link::lexical_shard::LexicalShard`]). Shard `n` answers each batch with one
//! [`AnswerBatch`] on partition `n` of the answer topic; the `detect` stage waits for the answers
//! of every shard, merges them per post, and links the batch with them
//! ([`Detector::process_answered`](echotrace_core::detector::Detector::process_answered)).
//!
//! A `detect` process names itself with a fresh `asker` at start-up and numbers its batches, and
//! reads the answer topic from its end at start-up: answers to another process, or to its own
//! earlier life, are passed over. A shard answers a batch again after it restarts from before
//! its last commit; the copy is passed over too.
//!
//! Messages are a version byte ([`EXCHANGE_VERSION`]) and a postcard payload.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sinks::kafka::{KafkaPublisher, Source};
use crate::stages::InvalidInput;
use anyhow::Context;
use echotrace_core::link::lexical::{LexicalAnswer, LinkProbe};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The version of the messages on the probe and answer topics.
pub const EXCHANGE_VERSION: u8 = 1;

/// How long start-up waits for the topics' metadata and ends.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the `detect` stage waits before it sends a batch's probes again, when the brokers
/// refused them.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// `fetch.wait.max.ms` of the exchange's readers (a `link` process's probes, the `detect` stage's
/// answers): each batch waits on both. librdkafka's default, 500 ms, held a round trip to about a
/// second on the mock cluster (64 posts/s in `staged-throughput`), which answers a fetch only
/// when the wait ends; a broker that answers as soon as data arrives gains nothing from it, and
/// an idle reader then asks 100 times a second.
pub const FETCH_WAIT_MS: &str = "10";

/// One batch of posts, in the `detect` stage's order, for every linking shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeBatch {
    /// The `detect` process that asks: a number it drew at start-up.
    pub asker: u64,
    /// The batch's number among the asker's, from 0.
    pub batch: u64,
    /// The posts, in order.
    pub posts: Vec<ProbedPost>,
}

/// One post of a [`ProbeBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbedPost {
    /// What a linking shard needs of the post.
    pub probe: LinkProbe,
    /// When its message arrived (its Kafka timestamp), in milliseconds: it bounds how far the post
    /// moves the shard's event clock, as it does the detector's.
    pub arrived_at_ms: Option<i64>,
}

/// One shard's answers to a [`ProbeBatch`], one per post in its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerBatch {
    /// The asker of the batch.
    pub asker: u64,
    /// The batch's number.
    pub batch: u64,
    /// The shard that answers (`stage.link_shard`).
    pub shard: u32,
    /// Its answers.
    pub answers: Vec<LexicalAnswer>,
}

/// Why a message on the probe or answer topic was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidExchange {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// Written by a build with another message format.
    #[error("exchange message version {found}, this build reads version {EXCHANGE_VERSION}")]
    Version {
        /// The message's.
        found: u8,
    },
    /// The payload does not decode.
    #[error("not a {what}: {reason}")]
    Malformed {
        /// What it should have been.
        what: &'static str,
        /// postcard's reason.
        reason: String,
    },
}

impl InvalidExchange {
    /// A short, stable name for the kind of error (dead-letter headers and metric labels).
    pub fn kind(&self) -> &'static str {
        match self {
            InvalidExchange::Empty => "empty_exchange",
            InvalidExchange::Version { .. } => "exchange_version",
            InvalidExchange::Malformed { .. } => "malformed_exchange",
        }
    }
}

/// The bytes of an exchange message.
pub fn encode(message: &impl Serialize) -> Vec<u8> {
    postcard::to_extend(message, vec![EXCHANGE_VERSION]).expect("exchange messages serialize")
}

/// An exchange message from its bytes; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, InvalidExchange> {
    match bytes.split_first() {
        None => Err(InvalidExchange::Empty),
        Some((&EXCHANGE_VERSION, payload)) => postcard::from_bytes(payload)
            .map_err(|error| InvalidExchange::Malformed { what, reason: error.to_string() }),
        Some((&found, _)) => Err(InvalidExchange::Version { found }),
    }
}

/// Checks that the probe topic has exactly one partition and the answer topic one per linking
/// shard; fails saying which does not.
pub fn check_partitions(publisher: &KafkaPublisher, config: &Config) -> anyhow::Result<()> {
    let probes = publisher.partitions(&config.kafka.probe_topic, METADATA_TIMEOUT)?;
    anyhow::ensure!(
        probes == 1,
        "kafka.probe_topic {} has {probes} partitions: it needs exactly 1, the one order every linking shard takes \
         posts in",
        config.kafka.probe_topic
    );
    let answers = publisher.partitions(&config.kafka.answer_topic, METADATA_TIMEOUT)?;
    let shards = config.detector.link_shards.get();
    anyhow::ensure!(
        answers >= shards as i32,
        "kafka.answer_topic {} has {answers} partitions: it needs one per linking shard (detector.link_shards = {shards})",
        config.kafka.answer_topic
    );
    Ok(())
}

/// A batch of probes sent to the shards, whose answers are to be collected.
#[derive(Debug)]
pub struct AskedBatch {
    /// Its number among this asker's batches.
    number: u64,
    /// How many posts it probes.
    posts: usize,
    /// When it was sent.
    sent_at: Instant,
}

impl AskedBatch {
    /// When its probes were sent.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }
}

/// Keeps one shard's `answer` to a batch of `posts` in its slot, or passes over one that cannot
/// be that batch's.
fn keep(slots: &mut [Option<Vec<LexicalAnswer>>], answer: AnswerBatch, posts: usize) {
    let shard = answer.shard as usize;
    if shard < slots.len() && answer.answers.len() == posts {
        slots[shard] = Some(answer.answers);
    } else {
        tracing::warn!(
            shard,
            posts = answer.answers.len(),
            expected = posts,
            "an answer that cannot be this batch's; passed over"
        );
    }
}

/// Runs `work`, telling the runtime that it blocks where it runs on a multi-threaded runtime's
/// worker.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Assigns `answers` every shard's partition of `topic` from where it ends now.
fn read_from_end(answers: &BaseConsumer, topic: &str, shards: u32) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    for shard in 0..shards as i32 {
        let (_, end) = answers
            .fetch_watermarks(topic, shard, METADATA_TIMEOUT)
            .context("cannot read where the answer topic ends")?;
        assignment.add_partition_offset(topic, shard, Offset::Offset(end))?;
    }
    answers.assign(&assignment)?;
    Ok(())
}

/// What the `detect` process does beside a batch waiting for the shards' answers: it keeps its
/// place in its consumer group ([`crate::ingest::membership`]).
pub trait WhileWaiting: Send + Sync {
    /// Called about every 100 ms of a wait, with how long ago the batch was asked.
    fn waiting(&self, waited: Duration);
}

/// The `detect` stage's side of the exchange: sends each batch's probes and gathers every shard's
/// answers.
pub struct LinkShards {
    publisher: KafkaPublisher,
    answers: BaseConsumer,
    probe_topic: String,
    answer_topic: String,
    shards: u32,
    asker: u64,
    next_batch: u64,
    /// Answers to batches asked after the one being collected, by batch.
    early: BTreeMap<u64, Vec<AnswerBatch>>,
    warn_after: Duration,
    while_waiting: Option<Arc<dyn WhileWaiting>>,
    metrics: Arc<Metrics>,
}

impl LinkShards {
    /// Connects to the probe and answer topics `config` names; reads the answer topic from its end
    /// now.
    pub fn connect(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<LinkShards> {
        let publisher = KafkaPublisher::for_round_trips(&config.kafka).context("cannot create the probe producer")?;
        check_partitions(&publisher, config)?;
        let group = format!("{}-answers", config.kafka.group_id);
        let answers: BaseConsumer =
            crate::ingest::client_config(config, &[("group.id", group.as_str()), ("fetch.wait.max.ms", FETCH_WAIT_MS)])
                .create()
                .map_err(crate::config::without_secret)
                .context("cannot create the answer reader")?;
        let shards = config.detector.link_shards.get();
        read_from_end(&answers, &config.kafka.answer_topic, shards)?;
        // Drawn from the clock and the process id: two `detect` processes that share the topics
        // (one taking over from another) tell their answers apart.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let asker = xxhash_rust::xxh3::xxh3_64(format!("{}:{}", now.as_nanos(), std::process::id()).as_bytes());
        tracing::info!(probe_topic = %config.kafka.probe_topic, answer_topic = %config.kafka.answer_topic, shards, asker = %format!("{asker:016x}"), "linking shards asked over Kafka");
        Ok(LinkShards {
            publisher,
            answers,
            probe_topic: config.kafka.probe_topic.clone(),
            answer_topic: config.kafka.answer_topic.clone(),
            shards,
            asker,
            next_batch: 0,
            early: BTreeMap::new(),
            warn_after: Duration::from_millis(config.stage.link_answer_warn_ms.max(1)),
            while_waiting: None,
            metrics,
        })
    }

    /// Sends `posts`' probes to the shards and returns the batch asked, whose answers
    /// [`LinkShards::answers`] waits for. Batches are answered in the order asked; several may be
    /// asked before the first is collected. On a runtime's worker, it tells the runtime that it
    /// blocks (until the brokers acknowledge the probes).
    pub fn ask(&mut self, posts: Vec<ProbedPost>) -> AskedBatch {
        blocking(|| {
            if self.next_batch == 0 {
                // A `detect` process that stood by while another asked has the other's answers
                // behind it: its first question reads on from where the topic ends now.
                if let Err(error) = read_from_end(&self.answers, &self.answer_topic, self.shards) {
                    tracing::warn!(%error, "cannot read where the answer topic ends; reading on from where it ended at start-up");
                }
            }
            let asked = AskedBatch { number: self.next_batch, posts: posts.len(), sent_at: Instant::now() };
            self.next_batch += 1;
            self.send(&encode(&ProbeBatch { asker: self.asker, batch: asked.number, posts }));
            asked
        })
    }

    /// Has `while_waiting` called through every wait for answers.
    pub fn keep_waiting_with(&mut self, while_waiting: Arc<dyn WhileWaiting>) {
        self.while_waiting = Some(while_waiting);
    }

    /// Every shard's answers to the batch `asked`, merged per post, in order. Blocks until every
    /// shard has answered (a post linked without one shard's answer would miss its matches
    /// there), logging the missing shards every `stage.link_answer_warn_ms` and calling what
    /// [`LinkShards::keep_waiting_with`] gave; answers to batches asked after it are kept for
    /// their turn.
    pub fn answers(&mut self, asked: &AskedBatch) -> Vec<LexicalAnswer> {
        blocking(|| self.wait_for(asked))
    }

    fn wait_for(&mut self, asked: &AskedBatch) -> Vec<LexicalAnswer> {
        let shards = self.shards as usize;
        let mut answers = vec![None; shards];
        for answer in self.early.remove(&asked.number).into_iter().flatten() {
            keep(&mut answers, answer, asked.posts);
        }
        let mut warned_at = Instant::now();
        while answers.iter().any(Option::is_none) {
            match self.answers.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => match decode::<AnswerBatch>(message.payload().unwrap_or_default(), "answer batch")
                {
                    Ok(answer) if answer.asker == self.asker && answer.batch == asked.number => {
                        keep(&mut answers, answer, asked.posts);
                    }
                    Ok(answer) if answer.asker == self.asker && answer.batch > asked.number => {
                        // Checked when its batch's turn comes.
                        self.early.entry(answer.batch).or_default().push(answer);
                    }
                    Ok(_) => {}
                    Err(error) => self.dead_letter(&message, error),
                },
                Some(Err(error)) => tracing::warn!(%error, "answer reader error; continuing"),
                None => {}
            }
            if let Some(while_waiting) = &self.while_waiting {
                while_waiting.waiting(asked.sent_at.elapsed());
            }
            if warned_at.elapsed() >= self.warn_after {
                let missing: Vec<usize> = (0..answers.len()).filter(|&shard| answers[shard].is_none()).collect();
                tracing::warn!(
                    ?missing,
                    batch = asked.number,
                    waited_secs = asked.sent_at.elapsed().as_secs(),
                    "waiting for linking shards to answer (stage.role = \"link\", stage.link_shard)"
                );
                warned_at = Instant::now();
            }
        }
        self.metrics.link_answer_seconds.observe(asked.sent_at.elapsed().as_secs_f64());
        let mut by_shard: Vec<_> =
            answers.into_iter().map(|answers| answers.expect("every shard").into_iter()).collect();
        (0..asked.posts)
            .map(|_| LexicalAnswer::merged(by_shard.iter_mut().map(|answers| answers.next().expect("one per post"))))
            .collect()
    }

    /// Sends a message of the answer topic that is not an answer to the dead-letter topic, with
    /// its reason, and counts it; the wait for the batch's answers goes on.
    fn dead_letter(&self, message: &BorrowedMessage<'_>, error: InvalidExchange) {
        let error = InvalidInput::Exchange(error);
        let source =
            Source { topic: message.topic().to_owned(), partition: message.partition(), offset: message.offset() };
        tracing::warn!(source = %format!("{}/{}/{}", source.topic, source.partition, source.offset), kind = error.kind(), %error, "dead-lettering message");
        self.metrics.dead_letters.with_label_values(&[error.kind()]).inc();
        let payload = message.payload().unwrap_or_default();
        // Not awaited: the delivery goes on in the producer, and a refusal is the producer's to log.
        if let Err(error) = self.publisher.dead_letter(message.key(), payload, &source, &error) {
            tracing::warn!(%error, "cannot send the dead letter");
        }
    }

    /// Sends a probe batch until the brokers acknowledge it.
    fn send(&self, payload: &[u8]) {
        loop {
            let error = match self.publisher.exchange(&self.probe_topic, 0, payload) {
                Ok(delivery) => match futures::executor::block_on(delivery) {
                    Ok(Ok(_)) => return,
                    Ok(Err((error, _))) => error.to_string(),
                    Err(_) => "the producer dropped the delivery".to_owned(),
                },
                Err(error) => error.to_string(),
            };
            tracing::warn!(%error, topic = %self.probe_topic, "cannot send probes to the linking shards; sending again");
            std::thread::sleep(RESEND_AFTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_answer_is_kept_only_in_its_slot_and_for_a_batch_of_its_size() {
        let answer =
            |shard, posts| AnswerBatch { asker: 1, batch: 0, shard, answers: vec![LexicalAnswer::default(); posts] };
        let mut slots = vec![None; 3];
        keep(&mut slots, answer(1, 2), 2);
        assert!(slots[0].is_none() && slots[1].as_ref().is_some_and(|answers| answers.len() == 2));
        // Another size, or a shard beyond the count: not this batch's.
        keep(&mut slots, answer(0, 3), 2);
        keep(&mut slots, answer(3, 2), 2);
        assert!(slots[0].is_none() && slots[2].is_none());
    }

    #[test]
    fn exchange_messages_round_trip_and_bad_ones_say_why() {
        let probe = LinkProbe {
            post_key: 7,
            created_at_ms: 1_700_000_000_000,
            simhash: 0xfeed,
            similar_enough: true,
            signature: None,
            url_keys: vec![3, 4],
        };
        let batch = ProbeBatch { asker: 1, batch: 2, posts: vec![ProbedPost { probe, arrived_at_ms: Some(5) }] };
        let bytes = encode(&batch);
        assert_eq!(decode::<ProbeBatch>(&bytes, "probe batch").unwrap(), batch);
        assert!(matches!(decode::<ProbeBatch>(&[], "probe batch"), Err(InvalidExchange::Empty)));
        let mut newer = bytes.clone();
        newer[0] = EXCHANGE_VERSION + 1;
        assert_eq!(decode::<ProbeBatch>(&newer, "probe batch").unwrap_err().kind(), "exchange_version");
        let error = decode::<ProbeBatch>(&bytes[..bytes.len() - 3], "probe batch").unwrap_err();
        assert!(error.to_string().starts_with("not a probe batch"), "{error}");
        let answer = AnswerBatch { asker: 1, batch: 2, shard: 0, answers: vec![LexicalAnswer::default()] };
        assert_eq!(decode::<AnswerBatch>(&encode(&answer), "answer batch").unwrap(), answer);
    }
}
