//! The pipeline every mode shares: a post goes through the [`Detector`] (link, graph) and the
//! [`Scorer`] (features, rules, alerts) into the [`ParquetSink`], and what it produced is reported to
//! metrics and to an optional observer (the demo's printer).
//!
//! `run` and `demo` drive it from the Kafka consumer, `replay` from a file; the stage code is the same.

use crate::metrics::Metrics;
use crate::sinks::parquet::{ParquetSink, SinkError};
use echotrace_core::detector::{Detection, Detector};
use echotrace_core::post::Post;
use echotrace_core::records::EdgeRecord;
use echotrace_core::score::alerts::{AlertEvent, Scorer};
use echotrace_core::score::features::PostSignals;
use std::sync::{Arc, Mutex};

/// Called with every detection, after it is buffered.
pub type Observer = Box<dyn FnMut(&Detection) + Send>;

/// What one new post produced, for the Kafka sinks and Alertmanager.
#[derive(Debug, Default)]
pub struct Processed {
    /// Edges found.
    pub edges: Vec<EdgeRecord>,
    /// Alert events caused.
    pub alerts: Vec<AlertEvent>,
}

/// The detector, the scorer and their sinks.
pub struct Pipeline {
    detector: Arc<Mutex<Detector>>,
    scorer: Scorer,
    sink: ParquetSink,
    metrics: Arc<Metrics>,
    observer: Option<Observer>,
}

impl Pipeline {
    /// A pipeline over a shared detector (the HTTP API reads the same one).
    pub fn new(detector: Arc<Mutex<Detector>>, scorer: Scorer, sink: ParquetSink, metrics: Arc<Metrics>) -> Pipeline {
        Pipeline { detector, scorer, sink, metrics, observer: None }
    }

    /// Adds an observer of every detection.
    pub fn with_observer(mut self, observer: Observer) -> Pipeline {
        self.observer = Some(observer);
        self
    }

    /// Processes one post; returns what it produced, or `None` for a duplicate.
    pub fn process(&mut self, post: Post) -> Option<Processed> {
        let event_time = post.created_at.timestamp_millis() as f64 / 1000.0;
        let signals = PostSignals {
            author_id: post.author.id.clone(),
            declared_automated: post.author.declared_automated.unwrap_or(false),
            author_created_at: post.author.created_at,
            mentions: post.mentions.clone(),
        };
        let (detection, stats, window, cascades) = {
            let mut detector = self.detector.lock().expect("detector lock poisoned");
            let detection = detector.process(post);
            (detection, detector.stats(), detector.window_len(), detector.graph().cascade_count())
        };
        self.metrics.observe_detector(stats, window, cascades);
        let detection = detection?;
        if event_time > self.metrics.event_time_seconds.get() {
            self.metrics.event_time_seconds.set(event_time);
        }
        self.metrics.posts_by_platform.with_label_values(&[detection.post.platform.as_str()]).inc();
        let alerts = self.scorer.observe(&detection, &signals);
        for alert in &alerts {
            self.metrics.observe_alert(alert);
            self.sink.push_alert(alert.clone());
        }
        if let Some(observer) = &mut self.observer {
            observer(&detection);
        }
        let edges = detection.edges.clone();
        self.sink.push(detection);
        Some(Processed { edges, alerts })
    }

    /// Posts buffered and not yet durable.
    pub fn buffered_posts(&self) -> usize {
        self.sink.buffered_posts()
    }

    /// Makes every buffered row durable, and refreshes the top-cascade gauges.
    pub fn flush(&mut self) -> Result<usize, SinkError> {
        let rows = self.sink.flush()?;
        self.metrics.rows_written.inc_by(rows as u64);
        let top =
            self.detector.lock().expect("detector lock poisoned").graph().top_cascades(crate::metrics::TOP_CASCADES);
        self.metrics.observe_top_cascades(&top);
        Ok(rows)
    }
}
