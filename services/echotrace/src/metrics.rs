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

/// Labels of an alert rule (a small configured set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The rule's name.
    pub rule: String,
    /// Its severity.
    pub severity: String,
}

/// Labels of an alert transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The rule's name.
    pub rule: String,
    /// Its severity.
    pub severity: String,
    /// `firing` or `resolved`.
    pub state: String,
}

/// Label of a platform (bounded by the platforms a deployment ingests).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabel {
    /// The platform.
    pub platform: String,
}

/// Label of a rank among the largest cascades: "1" to "10", never a cascade id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RankLabel {
    /// The rank.
    pub rank: String,
}

/// How many of the largest cascades are exported.
pub const TOP_CASCADES: usize = 10;

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
    /// Posts processed, by platform.
    pub posts_by_platform: Family<PlatformLabel, Counter>,
    /// Amplification alerts firing now, by rule.
    pub alerts_firing: Family<RuleLabels, Gauge>,
    /// Alert state changes, by rule and new state.
    pub alert_transitions: Family<TransitionLabels, Counter>,
    /// Pushes accepted by Alertmanager.
    pub alert_deliveries: Counter,
    /// Pushes Alertmanager did not accept (or could not be reached for).
    pub alert_delivery_failures: Counter,
    /// From the produce time of the post that made a rule true to Alertmanager accepting the alert.
    pub time_to_alert_seconds: Histogram,
    /// Sizes of the largest live cascades, by rank.
    pub top_cascade_posts: Family<RankLabel, Gauge>,
    /// Platform counts of the largest live cascades, by rank.
    pub top_cascade_platforms: Family<RankLabel, Gauge>,
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
            posts_by_platform: Family::default(),
            alerts_firing: Family::default(),
            alert_transitions: Family::default(),
            alert_deliveries: Counter::default(),
            alert_delivery_failures: Counter::default(),
            time_to_alert_seconds: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            top_cascade_posts: Family::default(),
            top_cascade_platforms: Family::default(),
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
        registry.register("posts_by_platform", "Posts processed, by platform", metrics.posts_by_platform.clone());
        registry.register("alerts_firing", "Amplification alerts firing now", metrics.alerts_firing.clone());
        registry.register("alert_transitions", "Alert state changes", metrics.alert_transitions.clone());
        registry.register(
            "alert_deliveries",
            "Alert pushes accepted by Alertmanager",
            metrics.alert_deliveries.clone(),
        );
        registry.register(
            "alert_delivery_failures",
            "Alert pushes Alertmanager did not accept",
            metrics.alert_delivery_failures.clone(),
        );
        registry.register_with_unit(
            "time_to_alert",
            "From the produce time of the post that made a rule true to Alertmanager accepting the alert",
            prometheus_client::registry::Unit::Seconds,
            metrics.time_to_alert_seconds.clone(),
        );
        registry.register(
            "top_cascade_posts",
            "Sizes of the largest live cascades, by rank",
            metrics.top_cascade_posts.clone(),
        );
        registry.register(
            "top_cascade_platforms",
            "Platform counts of the largest live cascades, by rank",
            metrics.top_cascade_platforms.clone(),
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

    /// Counts an alert transition and keeps the firing gauge in step.
    pub fn observe_alert(&self, event: &echotrace_core::score::alerts::AlertEvent) {
        // A firing event is either the start of an alert or an update as its cascade grows.
        let newly = event.started_at == event.event_time;
        let rule = RuleLabels { rule: event.rule.clone(), severity: event.severity.clone() };
        let transition = TransitionLabels {
            rule: event.rule.clone(),
            severity: event.severity.clone(),
            state: event.state.as_str().to_owned(),
        };
        match event.state {
            echotrace_core::score::alerts::AlertState::Firing if newly => {
                self.alerts_firing.get_or_create(&rule).inc();
                self.alert_transitions.get_or_create(&transition).inc();
            }
            echotrace_core::score::alerts::AlertState::Firing => {}
            echotrace_core::score::alerts::AlertState::Resolved => {
                self.alerts_firing.get_or_create(&rule).dec();
                self.alert_transitions.get_or_create(&transition).inc();
            }
        }
    }

    /// Sets the top-cascade gauges from the largest live cascades, largest first.
    pub fn observe_top_cascades(&self, cascades: &[echotrace_core::records::CascadeRecord]) {
        for rank in 0..TOP_CASCADES {
            let label = RankLabel { rank: (rank + 1).to_string() };
            let (size, platforms) = cascades.get(rank).map_or((0, 0), |c| (c.size as i64, c.platforms.len() as i64));
            self.top_cascade_posts.get_or_create(&label).set(size);
            self.top_cascade_platforms.get_or_create(&label).set(platforms);
        }
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
