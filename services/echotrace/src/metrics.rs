//! Prometheus metrics, named by Prometheus conventions (`echotrace_` prefix, `_total` counters, base
//! units), with bounded label sets: no post, author or cascade ids as labels.

use echotrace_core::detector::DetectorStats;
use echotrace_core::records::EdgeKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label of a dead letter: the error kind (a small fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of the `InvalidPost` kinds.
    pub reason: String,
}

/// Label of an edge: its kind (a small fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The edge kind.
    pub kind: String,
}

/// Label of a consumed partition (bounded by the topic's partition count).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The topic.
    pub topic: String,
    /// The partition number.
    pub partition: String,
}

/// Every metric echotrace exports.
pub struct Metrics {
    registry: Registry,
    /// Kafka messages received.
    pub messages_consumed: Counter,
    /// Posts processed into the graph.
    pub posts_processed: Counter,
    /// Posts dropped because their id was already processed.
    pub posts_duplicate: Counter,
    /// Messages sent to the dead-letter topic, by reason.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// Edges found, by kind.
    pub edges: Family<KindLabel, Counter>,
    /// Cascade merges.
    pub cascade_merges: Counter,
    /// Consumer lag per partition, from librdkafka's statistics.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Posts in the linking window.
    pub window_posts: Gauge,
    /// Live cascades in the window.
    pub cascades_live: Gauge,
    /// Time to process one message, from receipt to its rows being buffered.
    pub processing_seconds: Histogram,
    /// Flushes of the Parquet datasets followed by an offset commit.
    pub checkpoints: Counter,
    /// Rows written to Parquet, all datasets.
    pub rows_written: Counter,
    /// Event time of the newest post processed, in seconds since the epoch.
    pub event_time_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("echotrace");
        let metrics = Metrics {
            messages_consumed: Counter::default(),
            posts_processed: Counter::default(),
            posts_duplicate: Counter::default(),
            dead_letters: Family::default(),
            edges: Family::default(),
            cascade_merges: Counter::default(),
            consumer_lag: Family::default(),
            window_posts: Gauge::default(),
            cascades_live: Gauge::default(),
            processing_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            checkpoints: Counter::default(),
            rows_written: Counter::default(),
            event_time_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("messages_consumed", "Kafka messages received", metrics.messages_consumed.clone());
        registry.register("posts_processed", "Posts processed into the graph", metrics.posts_processed.clone());
        registry.register(
            "posts_duplicate",
            "Posts dropped as duplicates of a processed id",
            metrics.posts_duplicate.clone(),
        );
        registry.register("dead_letters", "Messages dead-lettered, by reason", metrics.dead_letters.clone());
        registry.register("edges", "Edges found, by kind", metrics.edges.clone());
        registry.register("cascade_merges", "Cascades merged by a bridging post", metrics.cascade_merges.clone());
        registry.register("consumer_lag_messages", "Messages behind the partition's end", metrics.consumer_lag.clone());
        registry.register("window_posts", "Posts in the linking window", metrics.window_posts.clone());
        registry.register("cascades_live", "Live cascades in the window", metrics.cascades_live.clone());
        registry.register_with_unit(
            "processing",
            "Time to process one message",
            prometheus_client::registry::Unit::Seconds,
            metrics.processing_seconds.clone(),
        );
        registry.register("checkpoints", "Parquet flushes followed by an offset commit", metrics.checkpoints.clone());
        registry.register("parquet_rows_written", "Rows written to Parquet", metrics.rows_written.clone());
        registry.register_with_unit(
            "event_time",
            "Event time of the newest post processed",
            prometheus_client::registry::Unit::Seconds,
            metrics.event_time_seconds.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Brings the detector-derived counters in line with the detector's own counts.
    pub fn observe_detector(&self, stats: DetectorStats, window_posts: usize, cascades_live: usize) {
        catch_up(&self.posts_processed, stats.posts);
        catch_up(&self.posts_duplicate, stats.duplicates);
        catch_up(&self.cascade_merges, stats.merges);
        for (kind, count) in EdgeKind::ALL.iter().zip(stats.edges_by_kind) {
            catch_up(&self.edges.get_or_create(&KindLabel { kind: kind.as_str().to_owned() }), count);
        }
        self.window_posts.set(window_posts as i64);
        self.cascades_live.set(cascades_live as i64);
    }

    /// The text exposition format of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
