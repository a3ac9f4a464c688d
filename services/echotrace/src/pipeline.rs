//! The pipeline every mode shares: a post goes through the [`Detector`] (link, graph) and the
//! [`Scorer`] (features, rules, alerts) into the [`ParquetSink`], and what it produced is reported to
//! metrics and to an optional observer (the demo's printer).
//!
//! `run` and `demo` drive it from the Kafka consumer, `replay` from a file; the stage code is the same.
//!
//! With semantic linking on, posts wait in a small batch before they are processed: the batch runs
//! when `embed.batch_size` posts wait or the oldest has waited `embed.batch_latency_ms`. Then the
//! batch goes through the stateless stage ([`echotrace_core::prepare`]) across `embed.threads`
//! threads, the posts that nothing lexical explains are embedded together (identical normalized
//! texts once, and recent texts come from a cache), and the detector links the batch
//! ([`Detector::process_batch`]: the first pass of each embedded post's scan by meaning across the
//! same threads, then every post in arrival order; the HTTP API's reads of the detector wait for
//! the batch, a few milliseconds). The batch is bounded, and embedding runs on the
//! consumer's task: when the model falls behind, the consumer slows down and Kafka holds the
//! backlog (consumer lag), never an unbounded queue here.

use crate::config::{Config, StageRole};
use crate::embed::cached::{BatchEmbed, CachedEmbedder};
use crate::embed::{EmbedConfig, Embedder};
use crate::explorer::board::AlertBoard;
use crate::metrics::Metrics;
use crate::sinks::parquet::{ParquetSink, SinkError};
use crate::stages::Input;
use crate::stages::probes::{AskedBatch, LinkShards, ProbedPost, WhileWaiting};
use crate::state::{StateError, StateStore};
use anyhow::Context;
use chrono::{DateTime, Utc};
use echotrace_core::detector::{BatchPost, Detection, Detector};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::post::Post;
use echotrace_core::prepare::PreparedPost;
use echotrace_core::records::EdgeRecord;
use echotrace_core::score::alerts::{AlertEvent, Scorer, ScorerState};
use echotrace_core::score::features::PostSignals;
use echotrace_core::score::router::OwnerRecord;
use echotrace_core::stage::Stage;
use echotrace_core::state::{Position, Snapshot};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Called with every detection and the alert events it caused, after they are buffered.
pub type Observer = Box<dyn FnMut(&Detection, &[AlertEvent]) + Send>;

/// What one new post produced, for the Kafka sinks and Alertmanager.
#[derive(Debug, Default)]
pub struct Processed {
    /// Edges found.
    pub edges: Vec<EdgeRecord>,
    /// Alert events caused.
    pub alerts: Vec<AlertEvent>,
    /// When the post's message was produced, as given to [`Pipeline::submit`].
    pub produced_at: Option<DateTime<Utc>>,
    /// The scorer's records for the owners of cascades, each with its owner, where they run as
    /// the `score` stage (`stage.score_stage`); the alerts are then theirs to raise.
    pub owner_records: Vec<(usize, OwnerRecord)>,
}

/// A post waiting for its batch: as it arrived, or prepared (and embedded where it may be linked
/// by meaning) by a `prepare` stage ([`crate::stages`]).
enum Waiting {
    Arrived(Post),
    Prepared(PreparedPost, Option<Arc<TextEmbedding>>),
}

impl Waiting {
    fn id(&self) -> &str {
        match self {
            Waiting::Arrived(post) => &post.id,
            Waiting::Prepared(prepared, _) => &prepared.post.id,
        }
    }
}

/// The embedding model and the posts waiting for the next batch.
struct SemanticStage {
    /// The model; none in the `detect` stage, whose posts come embedded.
    embedder: Option<CachedEmbedder>,
    pending: Vec<(Waiting, Option<DateTime<Utc>>)>,
    oldest_since: Option<Instant>,
    batch_size: usize,
    batch_latency: Duration,
    /// Threads a batch's posts are prepared over ([`echotrace_core::prepare`]).
    threads: usize,
}

/// A batch through the stateless stage and the embedder, to be linked.
struct PreparedBatch {
    posts: Vec<PreparedPost>,
    embeddings: Vec<Option<Arc<TextEmbedding>>>,
    produced_at: Vec<Option<DateTime<Utc>>>,
    /// Its probes, sent to the `link` stage, whose answers it waits for.
    asked: Option<AskedBatch>,
}

/// The detector, the scorer and their sinks.
pub struct Pipeline {
    detector: Arc<Mutex<Detector>>,
    scorer: Scorer,
    sink: ParquetSink,
    metrics: Arc<Metrics>,
    observer: Option<Observer>,
    alert_board: Option<Arc<Mutex<AlertBoard>>>,
    semantic: Option<SemanticStage>,
    /// The `link` stage's shards, asked for each batch's answers (`stage.link_stage`).
    link_shards: Option<LinkShards>,
    /// A batch whose probes are out, linked when the next batch runs, at the next deadline or at
    /// a checkpoint.
    in_flight: Option<PreparedBatch>,
    muted: bool,
    /// Whether the owners of cascades run as the `score` stage: the scorer routes its records to
    /// them and raises no alert here.
    routes_scores: bool,
}

/// The pipeline `config` asks for: with the embedding model loaded when semantic linking is on,
/// which fails here, at start-up, if the model or ONNX Runtime cannot be loaded.
pub fn from_config(
    config: &Config,
    detector: Arc<Mutex<Detector>>,
    sink: ParquetSink,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Pipeline> {
    let scorer = Scorer::new(config.alerting.rules()?, &config.alerting.score_config());
    let pipeline = Pipeline {
        routes_scores: config.scores_over_kafka(),
        ..Pipeline::new(detector, scorer, sink, metrics.clone())
    };
    if config.links_over_kafka() {
        // Every batch makes one round trip to the shards; posts come embedded, if at all.
        let shards = LinkShards::connect(config, metrics).context("the detect stage asks the link stage")?;
        let batches = EmbedConfig {
            batch_size: config.embed.batch_size.max(config.stage.link_batch_size),
            ..config.embed.clone()
        };
        return Ok(Pipeline { link_shards: Some(shards), ..pipeline.with_batches(None, &batches) });
    }
    if !config.detector.semantic.enabled {
        return Ok(pipeline);
    }
    if config.stage.role == StageRole::Detect {
        // Posts come embedded by the `prepare` stage; batches still share the scan's first pass.
        return Ok(pipeline.with_batches(None, &config.embed));
    }
    let embedder = Embedder::new(&config.embed).context("semantic linking is on (detector.semantic.enabled)")?;
    tracing::info!(model = %config.embed.model_file, dimension = embedder.dimension(), device = ?embedder.device(), "sentence embeddings loaded");
    Ok(pipeline.with_batches(Some(embedder), &config.embed))
}

/// Embeds the texts of `keys` that have a key ([`BatchEmbed::embed_batch`]) and counts what it
/// did. When the model fails, the error is logged and counted and no text gets an embedding: the
/// posts are linked by everything but meaning.
pub fn embed_counted(
    embedder: &mut CachedEmbedder,
    keys: &[(Option<u64>, &str)],
    metrics: &Metrics,
) -> Vec<Option<Arc<TextEmbedding>>> {
    let outcome = embedder.embed_batch(keys);
    metrics.embedding_reuses.inc_by(outcome.reused);
    metrics.embeddings.inc_by(outcome.embedded);
    if outcome.embedded > 0 || outcome.failure.is_some() {
        metrics.embed_batch_seconds.observe(outcome.seconds);
    }
    if let Some(error) = outcome.failure {
        tracing::error!(%error, posts = keys.len(), "embedding failed; linking this batch without it");
        metrics.embedding_failures.inc();
    }
    outcome.embeddings
}

impl Pipeline {
    /// A pipeline over a shared detector (the HTTP API reads the same one).
    pub fn new(detector: Arc<Mutex<Detector>>, scorer: Scorer, sink: ParquetSink, metrics: Arc<Metrics>) -> Pipeline {
        Pipeline {
            detector,
            scorer,
            sink,
            metrics,
            observer: None,
            alert_board: None,
            semantic: None,
            link_shards: None,
            in_flight: None,
            muted: false,
            routes_scores: false,
        }
    }

    /// Has `while_waiting` called through the waits for the `link` stage's answers, where this
    /// pipeline asks that stage.
    pub fn keep_waiting_with(&mut self, while_waiting: Arc<dyn WhileWaiting>) {
        if let Some(shards) = &mut self.link_shards {
            shards.keep_waiting_with(while_waiting);
        }
    }

    /// Turns semantic linking on: posts are batched, and embedded by `embedder` unless they come
    /// embedded ([`Pipeline::submit_prepared`]).
    pub fn with_batches(mut self, embedder: Option<Embedder>, config: &EmbedConfig) -> Pipeline {
        self.semantic = Some(SemanticStage {
            embedder: embedder.map(|embedder| CachedEmbedder::new(embedder, config.cache_entries)),
            pending: Vec::with_capacity(config.batch_size),
            oldest_since: None,
            batch_size: config.batch_size.max(1),
            batch_latency: Duration::from_millis(config.batch_latency_ms),
            threads: crate::embed::threads_or_cores(config.threads),
        });
        self
    }

    /// Mutes the sinks, or unmutes them: a muted pipeline links and scores as ever but writes no
    /// row, reports no alert and returns nothing to publish (rebuilding the window from Kafka).
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Adds an observer of every detection and its alert events.
    pub fn with_observer(mut self, observer: Observer) -> Pipeline {
        self.observer = Some(observer);
        self
    }

    /// Records every alert event on `board` too (the explorer's).
    pub fn with_alert_board(mut self, board: Arc<Mutex<AlertBoard>>) -> Pipeline {
        self.alert_board = Some(board);
        self
    }

    /// Takes one post (with its message's production time, for alert latency). Without semantic
    /// linking it is processed at once; with it, it waits for its batch. Returns what the posts
    /// processed now produced (duplicates produce nothing).
    pub fn submit(&mut self, post: Post, produced_at: Option<DateTime<Utc>>) -> Vec<Processed> {
        if self.semantic.is_none() {
            let preparer = self.detector.lock().expect("detector lock poisoned").preparer();
            return self.process(preparer.prepare(post), None, produced_at).into_iter().collect();
        }
        self.wait(Waiting::Arrived(post), produced_at)
    }

    /// Takes one consumed message's post, prepared or not ([`crate::stages::InputDecoder`]).
    pub fn submit_input(&mut self, input: Input, produced_at: Option<DateTime<Utc>>) -> Vec<Processed> {
        match input {
            Input::Post(post) => self.submit(post, produced_at),
            Input::Prepared(prepared, embedding) => self.submit_prepared(prepared, embedding, produced_at),
        }
    }

    /// Takes one post that a `prepare` stage prepared and, where it may be linked by meaning,
    /// embedded ([`crate::stages`]); otherwise as [`Pipeline::submit`].
    pub fn submit_prepared(
        &mut self,
        prepared: PreparedPost,
        embedding: Option<Arc<TextEmbedding>>,
        produced_at: Option<DateTime<Utc>>,
    ) -> Vec<Processed> {
        if self.semantic.is_none() {
            return self.process(prepared, None, produced_at).into_iter().collect();
        }
        self.wait(Waiting::Prepared(prepared, embedding), produced_at)
    }

    /// Puts a post in the waiting batch, and runs the batch when it is full.
    fn wait(&mut self, post: Waiting, produced_at: Option<DateTime<Utc>>) -> Vec<Processed> {
        let stage = self.semantic.as_mut().expect("only batched pipelines wait");
        stage.pending.push((post, produced_at));
        stage.oldest_since.get_or_insert_with(Instant::now);
        self.metrics.embed_backlog.set(stage.pending.len() as i64);
        if stage.pending.len() >= stage.batch_size { self.run_waiting(true) } else { Vec::new() }
    }

    /// When [`Pipeline::run_due_batch`] must run, if any post waits: the waiting batch's oldest
    /// post's latency bound or, with none waiting, the same bound from when the batch in flight
    /// was sent. A post's alerts wait at most twice `embed.batch_latency_ms` and a round trip.
    pub fn batch_deadline(&self) -> Option<Instant> {
        let stage = self.semantic.as_ref()?;
        let waiting = stage.oldest_since.map(|since| since + stage.batch_latency);
        let in_flight = self.in_flight.as_ref().and_then(|batch| batch.asked.as_ref());
        waiting.or_else(|| in_flight.map(|asked| asked.sent_at() + stage.batch_latency))
    }

    /// Links the batch in flight, if any, and runs the waiting batch now (before every
    /// checkpoint, and at the end of the input): every post taken is processed when it returns.
    pub fn run_batch(&mut self) -> Vec<Processed> {
        self.run_waiting(false)
    }

    /// Runs what is due at [`Pipeline::batch_deadline`]: the waiting batch, whose probes, in the
    /// `detect` stage that asks the `link` stage, stay in flight until the next deadline or the
    /// next full batch; or, with no post waiting, the batch in flight.
    pub fn run_due_batch(&mut self) -> Vec<Processed> {
        self.run_waiting(true)
    }

    /// Prepares the waiting batch (sending its probes, in the `detect` stage that asks the
    /// `link` stage) and links the batch in flight before it; then links the new batch too or,
    /// with `keep_in_flight` and probes sent, leaves it in flight, so that its round trip to the
    /// shards overlaps the filling of the next batch. Shards answer from the probes alone, in
    /// the order sent, so the links are those of one batch at a time.
    fn run_waiting(&mut self, keep_in_flight: bool) -> Vec<Processed> {
        let waiting = self.prepare_waiting();
        let mut processed = match self.in_flight.take() {
            Some(batch) => self.link(batch),
            None => Vec::new(),
        };
        match waiting {
            Some(batch) if keep_in_flight && batch.asked.is_some() => self.in_flight = Some(batch),
            Some(batch) => processed.extend(self.link(batch)),
            None => {}
        }
        processed
    }

    /// Takes the waiting batch through the stateless stage and the embedder, and sends its
    /// probes to the `link` stage where it answers; `None` when no post waits.
    fn prepare_waiting(&mut self) -> Option<PreparedBatch> {
        let stage = self.semantic.as_mut()?;
        let batch = std::mem::take(&mut stage.pending);
        stage.oldest_since = None;
        self.metrics.embed_backlog.set(0);
        if batch.is_empty() {
            return None;
        }
        // The stateless stage runs across threads, outside the detector's lock, for the posts
        // that arrived as they were posted; prepared ones come with their embeddings.
        let preparer = self.detector.lock().expect("detector lock poisoned").preparer();
        let (waiting, produced_at): (Vec<Waiting>, Vec<Option<DateTime<Utc>>>) = batch.into_iter().unzip();
        let mut arrived = Vec::new();
        let mut given = Vec::with_capacity(waiting.len());
        for post in waiting {
            match post {
                Waiting::Arrived(post) => {
                    arrived.push(post);
                    given.push(None);
                }
                Waiting::Prepared(prepared, embedding) => given.push(Some((prepared, embedding))),
            }
        }
        let mut fresh = preparer.prepare_all(arrived, stage.threads).into_iter();
        let (posts, mut embeddings): (Vec<PreparedPost>, Vec<Option<Arc<TextEmbedding>>>) = given
            .into_iter()
            .map(|given| given.unwrap_or_else(|| (fresh.next().expect("one prepared post per arrived one"), None)))
            .unzip();
        if let Some(embedder) = &mut stage.embedder {
            let keys: Vec<(Option<u64>, &str)> = {
                let detector = self.detector.lock().expect("detector lock poisoned");
                posts
                    .iter()
                    .zip(&embeddings)
                    .map(|(prepared, given)| {
                        let key = given.is_none().then(|| detector.embedding_key(prepared)).flatten();
                        (key, prepared.post.text.as_str())
                    })
                    .collect()
            };
            let computed = embed_counted(embedder, &keys, &self.metrics);
            for (embedding, computed) in embeddings.iter_mut().zip(computed) {
                if embedding.is_none() {
                    *embedding = computed;
                }
            }
        }
        // The probes are made from the posts alone, outside the detector's lock.
        let asked = self.link_shards.as_mut().map(|shards| {
            let probes = self.detector.lock().expect("detector lock poisoned").probes(&posts);
            let probed = probes
                .into_iter()
                .zip(&produced_at)
                .map(|(probe, at)| ProbedPost { probe, arrived_at_ms: at.map(|at| at.timestamp_millis()) })
                .collect();
            shards.ask(probed)
        });
        Some(PreparedBatch { posts, embeddings, produced_at, asked })
    }

    /// Links a prepared batch, with the shards' answers where its probes were sent, and reports
    /// what it produced.
    fn link(&mut self, batch: PreparedBatch) -> Vec<Processed> {
        let PreparedBatch { posts, embeddings, produced_at, asked } = batch;
        let threads = self.semantic.as_ref().map_or(1, |stage| stage.threads);
        let signals: Vec<PostSignals> = posts.iter().map(|prepared| PostSignals::of(&prepared.post)).collect();
        // Waited for outside the detector's lock.
        let answers = asked.map(|asked| {
            self.link_shards.as_mut().expect("probes are sent only to shards that answer").answers(&asked)
        });
        let detections = {
            let mut detector = self.detector.lock().expect("detector lock poisoned");
            let posts = posts
                .into_iter()
                .zip(&embeddings)
                .zip(&produced_at)
                .map(|((prepared, embedding), produced_at)| BatchPost {
                    prepared,
                    embedding: embedding.as_deref(),
                    arrived_at: *produced_at,
                })
                .collect();
            let detections = match answers {
                Some(answers) => detector.process_answered(posts, answers, threads),
                None => Stage::process(&mut *detector, posts, threads),
            };
            self.metrics.observe_detector(detector.metrics());
            detections
        };
        detections
            .into_iter()
            .zip(signals)
            .zip(embeddings)
            .zip(produced_at)
            .filter_map(|(((detection, signals), embedding), produced_at)| {
                self.report(detection?, &signals, embedding, produced_at)
            })
            .collect()
    }

    /// Processes one post; returns what it produced, or `None` for a duplicate.
    fn process(
        &mut self,
        prepared: PreparedPost,
        embedding: Option<Arc<TextEmbedding>>,
        produced_at: Option<DateTime<Utc>>,
    ) -> Option<Processed> {
        let signals = PostSignals::of(&prepared.post);
        let detection = {
            let mut detector = self.detector.lock().expect("detector lock poisoned");
            let detection = detector.process_prepared(prepared, embedding.as_deref(), produced_at);
            self.metrics.observe_detector(detector.metrics());
            detection
        };
        self.report(detection?, &signals, embedding, produced_at)
    }

    /// Scores a detection and hands what it produced to the sinks, the alert board and the
    /// observer; returns it, or `None` while muted.
    fn report(
        &mut self,
        detection: Detection,
        signals: &PostSignals,
        embedding: Option<Arc<TextEmbedding>>,
        produced_at: Option<DateTime<Utc>>,
    ) -> Option<Processed> {
        let event_time = detection.post.created_at.timestamp_millis() as f64 / 1000.0;
        if event_time > self.metrics.event_time_seconds.get() {
            self.metrics.event_time_seconds.set(event_time);
        }
        let (alerts, owner_records) = if self.routes_scores {
            (Vec::new(), self.scorer.route(&detection, signals))
        } else {
            (self.scorer.observe(&detection, signals), Vec::new())
        };
        self.metrics.observe_scorer(self.scorer.metrics());
        if self.muted {
            return None;
        }
        self.metrics.posts_by_platform.with_label_values(&[detection.post.platform.as_str()]).inc();
        for alert in &alerts {
            self.metrics.observe_alert(alert);
            self.sink.push_alert(alert.clone());
        }
        if let Some(board) = &self.alert_board {
            let mut board = board.lock().expect("alert board lock poisoned");
            alerts.iter().for_each(|alert| board.record(alert));
        }
        if let Some(observer) = &mut self.observer {
            observer(&detection, &alerts);
        }
        let edges = detection.edges.clone();
        self.sink.push(detection, embedding);
        Some(Processed { edges, alerts, produced_at, owner_records })
    }

    /// A copy of the detector and the scorer's state, taken while neither can change: what a
    /// snapshot is encoded and written from off the consumer. The copy is the pause a checkpoint
    /// adds. Run the waiting batch first, so the state holds every post read.
    pub fn state_copy(&self) -> (Detector, ScorerState) {
        let started = Instant::now();
        let detector = self.detector.lock().expect("detector lock poisoned").clone();
        let copy = (detector, self.scorer.state().clone());
        self.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
        copy
    }

    /// Writes a snapshot at `positions` to `store` here and now, holding the detector meanwhile
    /// (shutdown, revocation); returns its size.
    pub fn snapshot(&self, store: &StateStore, positions: &[Position]) -> Result<u64, StateError> {
        let started = Instant::now();
        let detector = self.detector.lock().expect("detector lock poisoned");
        let bytes = store.write(&detector, self.scorer.state(), positions)?;
        drop(detector);
        self.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.observe_snapshot_written(bytes, started.elapsed());
        Ok(bytes)
    }

    /// Goes on from a snapshot: its detector and scorer state replace this pipeline's. Returns the
    /// alerts that were firing, for the Alertmanager dispatcher to keep sending (counted as firing).
    pub fn resume(&mut self, snapshot: Snapshot) -> Vec<AlertEvent> {
        let mut detector = self.detector.lock().expect("detector lock poisoned");
        *detector = snapshot.detector;
        self.metrics.observe_detector(detector.metrics());
        drop(detector);
        self.scorer.resume(snapshot.scorer);
        // The alerts firing are the snapshot's now, whatever this pipeline counted before.
        self.metrics.alerts_firing.reset();
        self.metrics.observe_scorer(self.scorer.metrics());
        self.firing_alerts()
    }

    /// The alerts firing now, counted as firing in the metrics and put on the alert board: after
    /// a resume or a rebuild, for the Alertmanager dispatcher to keep sending with their first
    /// `startsAt`.
    pub fn firing_alerts(&mut self) -> Vec<AlertEvent> {
        let firing = self.scorer.firing();
        firing.iter().for_each(|event| self.metrics.restore_firing(event));
        if let Some(board) = &self.alert_board {
            let mut board = board.lock().expect("alert board lock poisoned");
            firing.iter().for_each(|event| board.record(event));
        }
        firing
    }

    /// Whether a post with this id was taken before: processed (and still in the window),
    /// waiting in the embedding batch, or in the batch in flight.
    pub fn has_taken(&self, id: &str) -> bool {
        let waiting = self.semantic.as_ref().is_some_and(|stage| stage.pending.iter().any(|(post, _)| post.id() == id));
        let in_flight = self.in_flight.as_ref().is_some_and(|batch| batch.posts.iter().any(|post| post.post.id == id));
        waiting || in_flight || self.detector.lock().expect("detector lock poisoned").has_processed(id)
    }

    /// Posts dropped so far as duplicates of an already processed id.
    pub fn duplicates(&self) -> u64 {
        self.detector.lock().expect("detector lock poisoned").stats().duplicates
    }

    /// Posts buffered and not yet durable.
    pub fn buffered_posts(&self) -> usize {
        self.sink.buffered_posts()
    }

    /// Makes every buffered row durable, and refreshes the top-cascade gauges. Posts waiting for an
    /// embedding batch are not rows yet: run the batch first ([`Pipeline::run_batch`]).
    pub fn flush(&mut self) -> Result<usize, SinkError> {
        let rows = self.sink.flush()?;
        self.metrics.rows_written.inc_by(rows as u64);
        let top =
            self.detector.lock().expect("detector lock poisoned").graph().top_cascades(crate::metrics::TOP_CASCADES);
        self.metrics.observe_top_cascades(&top);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_taken_once_it_waits_for_its_batch_and_stays_taken_once_processed() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let detector = Arc::new(Mutex::new(Detector::new(config.detector.clone())));
        let scorer = Scorer::new(config.alerting.rules().unwrap(), &config.alerting.score_config());
        let sink = ParquetSink::new(dir.path()).unwrap();
        let mut pipeline =
            Pipeline::new(detector, scorer, sink, Arc::new(Metrics::new())).with_batches(None, &config.embed);
        let json = r#"{"id":"x:1","platform":"x","author":{"id":"a","handle":"a"},"created_at":"2026-11-01T09:00:00Z","text":"a post with a few words in it"}"#;
        assert!(!pipeline.has_taken("x:1"));
        assert!(pipeline.submit(Post::from_json(json.as_bytes()).unwrap(), None).is_empty(), "it waits for its batch");
        assert!(pipeline.has_taken("x:1"), "waiting in the batch");
        assert_eq!(pipeline.run_batch().len(), 1);
        assert!(pipeline.has_taken("x:1"), "processed");
        assert!(!pipeline.has_taken("x:2"));
    }
}
