//! The pipeline every mode shares: a post goes through the [`Detector`] into the [`ParquetSink`],
//! and what it produced is reported to metrics and to an optional observer (the demo's printer).
//!
//! `run` and `demo` drive it from the Kafka consumer, `replay` from a file; the stage code is the same.

use crate::metrics::Metrics;
use crate::sinks::parquet::{ParquetSink, SinkError};
use echotrace_core::detector::{Detection, Detector};
use echotrace_core::post::Post;
use echotrace_core::records::EdgeRecord;
use std::sync::{Arc, Mutex};

/// Called with every detection, after it is buffered.
pub type Observer = Box<dyn FnMut(&Detection) + Send>;

/// The detector and its sinks.
pub struct Pipeline {
    detector: Arc<Mutex<Detector>>,
    sink: ParquetSink,
    metrics: Arc<Metrics>,
    observer: Option<Observer>,
}

impl Pipeline {
    /// A pipeline over a shared detector (the HTTP API reads the same one).
    pub fn new(detector: Arc<Mutex<Detector>>, sink: ParquetSink, metrics: Arc<Metrics>) -> Pipeline {
        Pipeline { detector, sink, metrics, observer: None }
    }

    /// Adds an observer of every detection.
    pub fn with_observer(mut self, observer: Observer) -> Pipeline {
        self.observer = Some(observer);
        self
    }

    /// Processes one post; returns the edges it produced, or `None` for a duplicate.
    pub fn process(&mut self, post: Post) -> Option<Vec<EdgeRecord>> {
        let event_time = post.created_at.timestamp_millis() as f64 / 1000.0;
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
        if let Some(observer) = &mut self.observer {
            observer(&detection);
        }
        let edges = detection.edges.clone();
        self.sink.push(detection);
        Some(edges)
    }

    /// Posts buffered and not yet durable.
    pub fn buffered_posts(&self) -> usize {
        self.sink.buffered_posts()
    }

    /// Makes every buffered row durable.
    pub fn flush(&mut self) -> Result<usize, SinkError> {
        let rows = self.sink.flush()?;
        self.metrics.rows_written.inc_by(rows as u64);
        Ok(rows)
    }

    /// The shared detector.
    pub fn detector(&self) -> &Arc<Mutex<Detector>> {
        &self.detector
    }
}
