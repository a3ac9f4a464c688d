//! Prometheus metrics, named by Prometheus conventions (`echotrace_` prefix, `_total` counters, base
//! units) and served in the Prometheus text format, which `promtool check metrics` accepts clean.
//! Label sets are bounded: reasons, edge kinds, rules, platforms, partitions and ranks; never a post,
//! author or cascade id.

use echotrace_core::detector::DetectorMetrics;
use echotrace_core::records::{CascadeRecord, EdgeKind};
use echotrace_core::score::ScorerStats;
use echotrace_core::score::alerts::{AlertEvent, AlertState};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// How many of the largest cascades are exported.
pub const TOP_CASCADES: usize = 10;

/// Every metric echotrace exports.
pub struct Metrics {
    registry: Registry,
    /// Kafka messages received.
    pub messages_consumed: IntCounter,
    /// Posts processed into the graph.
    pub posts_processed: IntCounter,
    /// Posts dropped because their id was already processed.
    pub posts_duplicate: IntCounter,
    /// Posts later than `detector.allowed_lateness_secs` behind event time (processed and stored).
    pub posts_late: IntCounter,
    /// Posts dated past their arrival by more than `detector.max_event_time_lead_secs` (processed
    /// and stored; event time did not follow them).
    pub posts_ahead: IntCounter,
    /// Posts that left the window before `detector.window_secs` because it held
    /// `detector.max_window_posts`.
    pub posts_evicted_early: IntCounter,
    /// Cascades whose features the scorer forgot before `alerting.history_secs` because it kept
    /// `alerting.max_cascades`.
    pub cascades_forgotten_early: IntCounter,
    /// Cascades whose features the scorer keeps.
    pub scorer_cascades: IntGauge,
    /// In the `gate` stage: the number of the last post every owner of cascades is through with.
    pub gate_through_post: IntGauge,
    /// Messages sent to the dead-letter topic, by `reason` (the error kind).
    pub dead_letters: IntCounterVec,
    /// Edges found, by `kind`.
    pub edges: IntCounterVec,
    /// Cascade merges.
    pub cascade_merges: IntCounter,
    /// Consumer lag, by `topic` and `partition`, from librdkafka's statistics.
    pub consumer_lag: IntGaugeVec,
    /// Posts in the linking window.
    pub window_posts: IntGauge,
    /// Live cascades in the window.
    pub cascades_live: IntGauge,
    /// Embedded posts in the semantic window.
    pub semantic_window_posts: IntGauge,
    /// Posts waiting for the next embedding batch.
    pub embed_backlog: IntGauge,
    /// Texts embedded by the model.
    pub embeddings: IntCounter,
    /// Posts that reused an embedding of the same normalized text.
    pub embedding_reuses: IntCounter,
    /// Embedding batches that failed (their posts were linked without meaning).
    pub embedding_failures: IntCounter,
    /// Time to embed one batch.
    pub embed_batch_seconds: Histogram,
    /// Posts the `prepare` stage prepared and sent to the prepared topic.
    pub posts_prepared: IntCounter,
    /// Prepared posts the `detect` stage read that were prepared with other settings, and were
    /// prepared again from their text and linked without their embedding.
    pub prepared_foreign: IntCounter,
    /// Posts the `link` stage answered a probe for (not those it took again, unanswered, while it
    /// caught up after a restart).
    pub probes_answered: IntCounter,
    /// Time the `detect` stage waited for the linking shards' answers to one batch (`link` stage).
    pub link_answer_seconds: Histogram,
    /// Idle markers the `prepare` stage sent: an input partition read to its end.
    pub idle_markers: IntCounter,
    /// Posts held for the order across input partitions.
    pub posts_held: IntGauge,
    /// Posts linked after a later one (not copies of a post already taken, which are dropped).
    pub posts_out_of_order: IntCounter,
    /// Posts processed before the order reached them: one waited too long, or too many were held.
    pub order_forced: IntCounter,
    /// The time before which no input partition can deliver anything more, in seconds since the epoch.
    pub order_watermark: Gauge,
    /// Consumed partitions paused because too many of their posts wait for the order.
    pub partitions_paused: IntGauge,
    /// Partitions the consumer group has assigned this member now (0: standing by).
    pub partitions_owned: IntGauge,
    /// Assignments the consumer group has given this member, empty ones included.
    pub assignments: IntCounter,
    /// Time to process one message, from receipt to its rows being buffered.
    pub processing_seconds: Histogram,
    /// Flushes of the Parquet datasets followed by an offset commit.
    pub checkpoints: IntCounter,
    /// Offset commits that failed (retried at the next checkpoint).
    pub commit_failures: IntCounter,
    /// Snapshots of the detector and the scorer written.
    pub snapshots: IntCounter,
    /// Seconds the consumer paused for a snapshot: copying the state (the whole write on shutdown
    /// and before partitions are revoked).
    pub snapshot_seconds: Histogram,
    /// Seconds from a snapshot's start until it was durable (written and synced off the consumer).
    pub snapshot_write_seconds: Histogram,
    /// Size of the latest snapshot.
    pub snapshot_bytes: IntGauge,
    /// Partitions whose window was rebuilt from Kafka (at start-up without `state.dir`, or when
    /// assigned without a snapshot that reaches the group's commit).
    pub window_rebuilds: IntCounter,
    /// State snapshots restored when the group assigned partitions (start-up, takeover).
    pub state_takeovers: IntCounter,
    /// Revocations of this member's partitions without a checkpoint before them: the group gave
    /// them to another member first (its session or `max.poll.interval.ms` expired), the loop was
    /// busy, or the checkpoint failed. The next owner writes again the rows since the last commit.
    pub revocations_unchecked: IntCounter,
    /// Rows written to Parquet, all datasets.
    pub rows_written: IntCounter,
    /// Event time of the newest post processed, in seconds since the epoch.
    pub event_time_seconds: Gauge,
    /// Posts processed, by `platform`.
    pub posts_by_platform: IntCounterVec,
    /// Amplification alerts firing now, by `rule` and `severity`.
    pub alerts_firing: IntGaugeVec,
    /// Alert state changes, by `rule`, `severity` and new `state`.
    pub alert_transitions: IntCounterVec,
    /// State changes of alerts raised by rules on trial, which never page.
    pub shadow_alert_transitions: IntCounterVec,
    /// Alerts held by the circuit breaker (their rule paged its hourly limit), by `rule`.
    pub alerts_held: IntCounterVec,
    /// Pushes accepted by Alertmanager.
    pub alert_deliveries: IntCounter,
    /// Pushes Alertmanager did not accept (or could not be reached for).
    pub alert_delivery_failures: IntCounter,
    /// From the produce time of the post that made a rule true to Alertmanager accepting the alert.
    pub time_to_alert_seconds: Histogram,
    /// Sizes of the largest live cascades, by `rank` ("1" to "10").
    pub top_cascade_posts: IntGaugeVec,
    /// Platform counts of the largest live cascades, by `rank`.
    pub top_cascade_platforms: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Registers a metric and hands it back.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(registry, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric"))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let metrics = Metrics {
            messages_consumed: counter(&r, "echotrace_messages_consumed_total", "Kafka messages received"),
            posts_processed: counter(&r, "echotrace_posts_processed_total", "Posts processed into the graph"),
            posts_duplicate: counter(
                &r,
                "echotrace_posts_duplicate_total",
                "Posts dropped as duplicates of a processed id",
            ),
            posts_late: counter(
                &r,
                "echotrace_posts_late_total",
                "Posts later than detector.allowed_lateness_secs behind event time: processed and stored, linked to what the window still holds",
            ),
            posts_ahead: counter(
                &r,
                "echotrace_posts_ahead_total",
                "Posts dated past their message's arrival by more than detector.max_event_time_lead_secs: processed and stored; event time did not follow them",
            ),
            posts_evicted_early: counter(
                &r,
                "echotrace_posts_evicted_early_total",
                "Posts that left the linking window before detector.window_secs because it held detector.max_window_posts",
            ),
            cascades_forgotten_early: counter(
                &r,
                "echotrace_cascades_forgotten_early_total",
                "Cascades whose features were forgotten before alerting.history_secs because the scorer kept alerting.max_cascades",
            ),
            scorer_cascades: register(
                &r,
                IntGauge::new("echotrace_scorer_cascades", "Cascades whose features the scorer keeps").expect("valid"),
            ),
            gate_through_post: register(
                &r,
                IntGauge::new(
                    "echotrace_gate_through_post",
                    "The number of the last post every owner of cascades is through with: the gate has passed its alert events and those of every post before",
                )
                .expect("valid"),
            ),
            dead_letters: counter_vec(
                &r,
                "echotrace_dead_letters_total",
                "Messages dead-lettered, by reason",
                &["reason"],
            ),
            edges: counter_vec(&r, "echotrace_edges_total", "Edges found, by kind", &["kind"]),
            cascade_merges: counter(&r, "echotrace_cascade_merges_total", "Cascades merged by a bridging post"),
            consumer_lag: gauge_vec(
                &r,
                "echotrace_consumer_lag_messages",
                "Messages behind the partition's end",
                &["topic", "partition"],
            ),
            window_posts: register(
                &r,
                IntGauge::new("echotrace_window_posts", "Posts in the linking window").expect("valid"),
            ),
            cascades_live: register(
                &r,
                IntGauge::new("echotrace_cascades_live", "Live cascades in the window").expect("valid"),
            ),
            semantic_window_posts: register(
                &r,
                IntGauge::new("echotrace_semantic_window_posts", "Embedded posts in the semantic window")
                    .expect("valid"),
            ),
            embed_backlog: register(
                &r,
                IntGauge::new("echotrace_embed_backlog_posts", "Posts waiting for the next embedding batch")
                    .expect("valid"),
            ),
            embeddings: counter(&r, "echotrace_embeddings_total", "Texts embedded by the sentence model"),
            embedding_reuses: counter(
                &r,
                "echotrace_embedding_reuses_total",
                "Posts that reused the embedding of an identical normalized text",
            ),
            embedding_failures: counter(
                &r,
                "echotrace_embedding_failures_total",
                "Embedding batches that failed; their posts were linked without meaning",
            ),
            posts_prepared: counter(
                &r,
                "echotrace_posts_prepared_total",
                "Posts prepared by the prepare stage and acknowledged on the prepared topic",
            ),
            probes_answered: counter(
                &r,
                "echotrace_probes_answered_total",
                "Posts the link stage answered a probe for and took into its shard",
            ),
            link_answer_seconds: histogram(
                &r,
                "echotrace_link_answer_seconds",
                "Time the detect stage waited for every linking shard's answers to one batch",
                prometheus::exponential_buckets(0.000_5, 2.0, 16).expect("valid buckets"),
            ),
            prepared_foreign: counter(
                &r,
                "echotrace_prepared_foreign_total",
                "Prepared posts read with other settings than this stage's, prepared again and linked without meaning",
            ),
            idle_markers: counter(
                &r,
                "echotrace_idle_markers_total",
                "Idle markers sent by the prepare stage: an input partition read to its end",
            ),
            posts_held: register(
                &r,
                IntGauge::new(
                    "echotrace_posts_held",
                    "Posts held until the order across input partitions reaches them",
                )
                .expect("valid"),
            ),
            posts_out_of_order: counter(
                &r,
                "echotrace_posts_out_of_order_total",
                "Posts linked after a later one: a partition out of time order, a backfill on an idle partition, a forced release (copies of processed posts, sent again, are not counted)",
            ),
            order_forced: counter(
                &r,
                "echotrace_order_forced_total",
                "Posts processed before the order reached them: one waited stage.max_order_wait_ms, or stage.max_held_posts were held",
            ),
            order_watermark: register(
                &r,
                Gauge::new(
                    "echotrace_order_watermark_seconds",
                    "The time before which no input partition can deliver anything more (seconds since the epoch)",
                )
                .expect("valid"),
            ),
            partitions_paused: register(
                &r,
                IntGauge::new(
                    "echotrace_partitions_paused",
                    "Consumed partitions paused because too many of their posts wait for the other partitions",
                )
                .expect("valid"),
            ),
            partitions_owned: register(
                &r,
                IntGauge::new(
                    "echotrace_partitions_owned",
                    "Partitions the consumer group has assigned this member now; 0 for a member standing by",
                )
                .expect("valid"),
            ),
            assignments: counter(
                &r,
                "echotrace_assignments_total",
                "Assignments the consumer group has given this member, empty ones included: one at least once it has joined",
            ),
            embed_batch_seconds: histogram(
                &r,
                "echotrace_embed_batch_seconds",
                "Time to embed one batch of texts",
                prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets"),
            ),
            processing_seconds: histogram(
                &r,
                "echotrace_processing_seconds",
                "Time to process one message",
                prometheus::exponential_buckets(0.000_01, 4.0, 10).expect("valid buckets"),
            ),
            checkpoints: counter(
                &r,
                "echotrace_checkpoints_total",
                "Parquet flushes (each followed by an offset commit without state snapshots, every snapshot with them)",
            ),
            commit_failures: counter(
                &r,
                "echotrace_commit_failures_total",
                "Offset commits that failed; the next checkpoint commits again",
            ),
            snapshots: counter(
                &r,
                "echotrace_snapshots_total",
                "State snapshots written (each followed by an offset commit)",
            ),
            snapshot_seconds: histogram(
                &r,
                "echotrace_snapshot_seconds",
                "Time consumption paused for a state snapshot (copying the state; the whole write on shutdown and revocation)",
                vec![0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            snapshot_write_seconds: histogram(
                &r,
                "echotrace_snapshot_write_seconds",
                "Time from a state snapshot's start until it was written and synced, off the consumer",
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            ),
            snapshot_bytes: register(
                &r,
                IntGauge::new("echotrace_snapshot_bytes", "Size of the latest state snapshot").expect("valid"),
            ),
            window_rebuilds: counter(
                &r,
                "echotrace_window_rebuilds_total",
                "Partitions whose window was rebuilt from Kafka: at start-up without state.dir, or when assigned one the group committed past what this member holds and no snapshot reaching that commit could be taken over",
            ),
            state_takeovers: counter(
                &r,
                "echotrace_state_takeovers_total",
                "State snapshots restored when the group assigned this member partitions: on starting, or on taking over from another member",
            ),
            revocations_unchecked: counter(
                &r,
                "echotrace_revocations_without_checkpoint_total",
                "Revocations of this member's partitions with no checkpoint before them (assignment lost to another member, the loop busy, or the checkpoint failed): the next owner writes again the rows since the last commit",
            ),
            rows_written: counter(&r, "echotrace_parquet_rows_written_total", "Rows written to Parquet"),
            event_time_seconds: register(
                &r,
                Gauge::new("echotrace_event_time_seconds", "Event time of the newest post processed").expect("valid"),
            ),
            posts_by_platform: counter_vec(
                &r,
                "echotrace_posts_by_platform_total",
                "Posts processed, by platform",
                &["platform"],
            ),
            alerts_firing: gauge_vec(
                &r,
                "echotrace_alerts_firing",
                "Amplification alerts firing now",
                &["rule", "severity"],
            ),
            alert_transitions: counter_vec(
                &r,
                "echotrace_alert_transitions_total",
                "Alert state changes",
                &["rule", "severity", "state"],
            ),
            shadow_alert_transitions: counter_vec(
                &r,
                "echotrace_shadow_alert_transitions_total",
                "State changes of alerts raised by shadow rules (never sent to Alertmanager)",
                &["rule", "severity", "state"],
            ),
            alerts_held: counter_vec(
                &r,
                "echotrace_alerts_held_total",
                "Alerts held by the circuit breaker: stored, not paged (their rule paged alerting.max_pages_per_hour)",
                &["rule", "severity"],
            ),
            alert_deliveries: counter(&r, "echotrace_alert_deliveries_total", "Alert pushes accepted by Alertmanager"),
            alert_delivery_failures: counter(
                &r,
                "echotrace_alert_delivery_failures_total",
                "Alert pushes Alertmanager did not accept",
            ),
            time_to_alert_seconds: histogram(
                &r,
                "echotrace_time_to_alert_seconds",
                "From the produce time of the post that made a rule true to Alertmanager accepting the alert",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ),
            top_cascade_posts: gauge_vec(
                &r,
                "echotrace_top_cascade_posts",
                "Sizes of the largest live cascades, by rank",
                &["rank"],
            ),
            top_cascade_platforms: gauge_vec(
                &r,
                "echotrace_top_cascade_platforms",
                "Platform counts of the largest live cascades, by rank",
                &["rank"],
            ),
            registry: r,
        };
        // Series that exist from the start, so rate() and absence checks work before the first event.
        for kind in EdgeKind::ALL {
            metrics.edges.with_label_values(&[kind.as_str()]);
        }
        metrics
    }

    /// Brings the detector-derived counters in line with the detector's own counts.
    pub fn observe_detector(&self, detector: DetectorMetrics) {
        let DetectorMetrics { stats, window_posts, semantic_window_posts, cascades_live } = detector;
        catch_up(&self.posts_processed, stats.posts);
        catch_up(&self.posts_duplicate, stats.duplicates);
        catch_up(&self.cascade_merges, stats.merges);
        catch_up(&self.posts_late, stats.late);
        catch_up(&self.posts_ahead, stats.ahead);
        catch_up(&self.posts_evicted_early, stats.evicted_early);
        for (kind, count) in EdgeKind::ALL.iter().zip(stats.edges_by_kind) {
            catch_up(&self.edges.with_label_values(&[kind.as_str()]), count);
        }
        self.window_posts.set(window_posts as i64);
        self.semantic_window_posts.set(semantic_window_posts as i64);
        self.cascades_live.set(cascades_live as i64);
    }

    /// Brings the scorer's bound counters in line with its own counts.
    pub fn observe_scorer(&self, scorer: ScorerStats) {
        catch_up(&self.cascades_forgotten_early, scorer.forgotten_early);
        self.scorer_cascades.set(scorer.tracked_cascades as i64);
    }

    /// Counts a snapshot made durable: its size and how long it took from its start.
    pub fn observe_snapshot_written(&self, bytes: u64, took: std::time::Duration) {
        self.snapshots.inc();
        self.snapshot_bytes.set(bytes as i64);
        self.snapshot_write_seconds.observe(took.as_secs_f64());
    }

    /// Counts an alert transition and keeps the firing gauge in step; a shadow rule's transitions
    /// and alerts held by the circuit breaker are counted apart and leave the gauge alone.
    pub fn observe_alert(&self, event: &AlertEvent) {
        // A firing event is either the start of an alert or an update as its cascade grows.
        let newly = event.starts;
        let rule = [event.rule.as_str(), event.severity.as_str()];
        let transition = [event.rule.as_str(), event.severity.as_str(), event.state.as_str()];
        if event.shadow {
            if newly || event.state == AlertState::Resolved {
                self.shadow_alert_transitions.with_label_values(&transition).inc();
            }
            return;
        }
        if event.held {
            if newly && event.state == AlertState::Firing {
                self.alerts_held.with_label_values(&rule).inc();
            }
            return;
        }
        match event.state {
            AlertState::Firing if !newly => {}
            AlertState::Firing => {
                self.alerts_firing.with_label_values(&rule).inc();
                self.alert_transitions.with_label_values(&transition).inc();
            }
            AlertState::Resolved => {
                self.alerts_firing.with_label_values(&rule).dec();
                self.alert_transitions.with_label_values(&transition).inc();
            }
        }
    }

    /// Counts an alert that was firing when the state it lives in was restored from a snapshot.
    pub fn restore_firing(&self, event: &AlertEvent) {
        if !event.shadow && !event.held && event.state == AlertState::Firing {
            self.alerts_firing.with_label_values(&[event.rule.as_str(), event.severity.as_str()]).inc();
        }
    }

    /// Sets the top-cascade gauges from the largest live cascades, largest first.
    pub fn observe_top_cascades(&self, cascades: &[CascadeRecord]) {
        for rank in 0..TOP_CASCADES {
            let label = (rank + 1).to_string();
            let (size, platforms) = cascades.get(rank).map_or((0, 0), |c| (c.size as i64, c.platforms.len() as i64));
            self.top_cascade_posts.with_label_values(&[label.as_str()]).set(size);
            self.top_cascade_platforms.with_label_values(&[label.as_str()]).set(platforms);
        }
    }

    /// Messages whose outcome is known: processed into the graph, dropped as a duplicate, or
    /// dead-lettered. It trails [`Metrics::messages_consumed`] while posts wait for an embedding
    /// batch, so "everything sent has been handled" is `messages_settled() >= sent`.
    pub fn messages_settled(&self) -> u64 {
        let dead_letters: u64 = self
            .dead_letters
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum();
        self.posts_processed.get() + self.posts_duplicate.get() + dead_letters
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("writing to memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The sum of every series of the metric `family` (all its label sets) in a Prometheus text
/// exposition, such as `/metrics` answers: what the tests and benchmarks read off an instance.
pub fn sum_of_family(exposition: &str, family: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(family))
        .filter(|rest| rest.starts_with(['{', ' ']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
