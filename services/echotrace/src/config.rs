//! Configuration: a TOML file, then `ECHOTRACE_…` environment overrides, over built-in defaults.
//!
//! Nested keys are joined with `__` in the environment: `ECHOTRACE_KAFKA__BROKERS=host:9092` sets
//! `kafka.brokers`, `ECHOTRACE_DETECTOR__MAX_HAMMING=4` sets `detector.max_hamming`. Every field is
//! documented in `deploy/echotrace.toml`.

use crate::embed::EmbedConfig;
use echotrace_core::detector::DetectorConfig;
use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Serialized, Toml};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration's sections: `ECHOTRACE_<SECTION>__<KEY>` environment variables set their keys.
const SECTIONS: [&str; 9] = ["kafka", "detector", "embed", "output", "http", "alerting", "query", "state", "stage"];

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka input and output topics.
    pub kafka: KafkaConfig,
    /// Linking and windowing.
    pub detector: DetectorConfig,
    /// The sentence-embedding model behind semantic linking (`detector.semantic`).
    pub embed: EmbedConfig,
    /// Parquet output.
    pub output: OutputConfig,
    /// HTTP API and `/metrics`.
    pub http: HttpConfig,
    /// Features, rules and alert delivery.
    pub alerting: AlertingConfig,
    /// The Flight SQL server of `echotrace serve-sql`.
    pub query: QueryConfig,
    /// Snapshots of the detector and scorer, which a restarted `run` resumes from.
    pub state: StateConfig,
    /// Which stages `run` runs: all of them in one process (the default), or one stage of the
    /// staged deployment ([`crate::stages`]).
    pub stage: StageConfig,
}

/// Which stages of the pipeline one `echotrace run` process runs, and how a detecting process
/// orders what its input partitions deliver ([`crate::ingest::ordering`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageConfig {
    /// `whole`, `prepare`, `link`, `detect`, `score` or `gate` ([`StageRole`]).
    pub role: StageRole,
    /// In the `detect` stage: whether the lexical window's `detector.link_shards` shards run as
    /// `link` processes, asked over `kafka.probe_topic` and answering on `kafka.answer_topic`,
    /// rather than in this process.
    pub link_stage: bool,
    /// In the `detect` stage with `link_stage`: the most posts a batch holds (at least
    /// `embed.batch_size`). Each batch is one round trip to the shards, so under load it takes
    /// what waits, up to this many; when idle, a batch still runs after `embed.batch_latency_ms`.
    pub link_batch_size: usize,
    /// In the `link` stage: which of the `detector.link_shards` shards this process holds, from 0.
    pub link_shard: u32,
    /// In the `detect` stage: whether the owners of cascades (`alerting.cascade_owners`) run as
    /// `score` processes, sent the scorer's records on `kafka.owner_topic`, and their alert events
    /// go through a `gate` process on `kafka.gate_topic`, rather than all in this process.
    pub score_stage: bool,
    /// In the `score` stage: which of the `alerting.cascade_owners` owners this process is, from 0:
    /// the partition of `kafka.owner_topic` it reads.
    pub score_owner: u32,
    /// In the `detect` stage with `link_stage`: how long it waits for the shards' answers to a
    /// batch before it logs which shards are missing (and again each time as long); it goes on
    /// waiting, since a post linked without one shard's answer would miss its matches there.
    pub link_answer_warn_ms: u64,
    /// The longest a post takes from its `created_at` to its input partition. An input partition
    /// read to its end at a time holds back nothing older than that time less this, so where
    /// other partitions wait on an idle one, their posts wait this long.
    pub max_arrival_delay_ms: u64,
    /// The longest a post waits for the order across input partitions: past it, the next post
    /// goes ahead of a partition that has said nothing (its reader stopped, its leader down),
    /// counted (`echotrace_order_forced_total`). It bounds how late a stall makes every alert.
    pub max_order_wait_ms: u64,
    /// The most posts a detecting process holds while it waits for the order across input
    /// partitions; beyond, the next go ahead, counted (`echotrace_order_forced_total`).
    pub max_held_posts: usize,
    /// How often the `prepare` stage tells the `detect` stage that an input partition is still
    /// read to its end (an idle marker on `kafka.prepared_topic`).
    pub idle_marker_interval_ms: u64,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            role: StageRole::Whole,
            link_stage: false,
            link_batch_size: 1024,
            link_shard: 0,
            score_stage: false,
            score_owner: 0,
            link_answer_warn_ms: 10_000,
            max_arrival_delay_ms: 2_000,
            max_order_wait_ms: 15_000,
            max_held_posts: 50_000,
            idle_marker_interval_ms: 1_000,
        }
    }
}

impl StageConfig {
    /// [`StageConfig::max_arrival_delay_ms`] as a duration.
    pub fn max_arrival_delay(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::milliseconds(self.max_arrival_delay_ms.min(i64::MAX as u64) as i64)
    }
}

/// The part of the pipeline a process runs ([`crate::stages`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageRole {
    /// Everything in one process: `kafka.input_topics` in; rows, edges and alerts out.
    #[default]
    Whole,
    /// The stateless stage: `kafka.input_topics` in, decoded, validated, fingerprinted and
    /// embedded; prepared posts out to `kafka.prepared_topic`. Scaled by the input's partitions.
    Prepare,
    /// Linking, cascades and scoring: prepared posts in from `kafka.prepared_topic`; rows, edges
    /// and alerts out.
    Detect,
    /// One linking shard of the lexical window (`stage.link_shard`): every post's probe in from
    /// `kafka.probe_topic`, in the `detect` stage's order; its answer out to its partition of
    /// `kafka.answer_topic`.
    Link,
    /// One owner of cascades (`stage.score_owner`): the scorer's records of its cascades in from
    /// its partition of `kafka.owner_topic`, with the handovers other owners send it; its alert
    /// events out to `kafka.gate_topic`.
    Score,
    /// The paging gate: every owner's alert events in from `kafka.gate_topic`, in the order one
    /// scorer makes them, through the circuit breaker; alert rows, the alerts topic and
    /// Alertmanager out.
    Gate,
}

/// Where posts come from and where edges and dead letters go.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `kafka-1:9092,kafka-2:9092`.
    pub brokers: String,
    /// Consumer group id; detector instances in one group share the partitions.
    pub group_id: String,
    /// Topics of posts to consume.
    pub input_topics: Vec<String>,
    /// Topic for messages that are not valid posts.
    pub dead_letter_topic: String,
    /// Topic for edges as they are found (empty: do not publish edges).
    pub edges_topic: String,
    /// Topic for alert events, the audit trail (empty: do not publish alerts).
    pub alerts_topic: String,
    /// Topic between the staged deployment's `prepare` and `detect` stages (`stage.role`): one
    /// prepared post a message, keyed by post id, on the partition its post was read from.
    pub prepared_topic: String,
    /// Topic from the `detect` stage to the `link` stage (`stage.link_stage`): one message per
    /// batch of posts, with what a linking shard needs of each; one partition, the order every
    /// shard takes the posts in.
    pub probe_topic: String,
    /// Topic from the `link` stage back to the `detect` stage: each shard's answers to a batch, on
    /// the partition of the shard's number (at least `detector.link_shards` partitions).
    pub answer_topic: String,
    /// Topic from the `detect` stage to the `score` stage (`stage.score_stage`): the scorer's
    /// records of each batch, on the partition of their owner, and the handovers between owners;
    /// one partition per owner (`alerting.cascade_owners`).
    pub owner_topic: String,
    /// Topic from the `score` stage to the `gate` stage: each owner's alert events; one partition.
    pub gate_topic: String,
    /// Extra librdkafka properties for every client (SASL, TLS, timeouts), passed through verbatim,
    /// e.g. `"security.protocol" = "SASL_SSL"`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "echotrace".into(),
            input_topics: vec!["posts".into()],
            dead_letter_topic: "echotrace.dead-letter".into(),
            edges_topic: "echotrace.edges".into(),
            alerts_topic: "echotrace.alerts".into(),
            prepared_topic: "echotrace.prepared".into(),
            probe_topic: "echotrace.probes".into(),
            answer_topic: "echotrace.answers".into(),
            owner_topic: "echotrace.owners".into(),
            gate_topic: "echotrace.gate".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// Whether a librdkafka property may hold a secret (a password, a key, a client secret, a JAAS
/// line with both): its value is kept out of `Debug` output and error messages.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "ssl.key", "oauthbearer.config"].iter().any(|part| key.contains(part))
}

/// Leaves out the values of secret properties ([`is_secret_property`]).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(key, value)| (key.as_str(), if is_secret_property(key) { "<redacted>" } else { value.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("input_topics", &self.input_topics)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("edges_topic", &self.edges_topic)
            .field("alerts_topic", &self.alerts_topic)
            .field("prepared_topic", &self.prepared_topic)
            .field("probe_topic", &self.probe_topic)
            .field("answer_topic", &self.answer_topic)
            .field("owner_topic", &self.owner_topic)
            .field("gate_topic", &self.gate_topic)
            .field("properties", &properties)
            .finish()
    }
}

/// `error` with the value librdkafka refused left out where it may be a secret: the value of a
/// secret property ([`is_secret_property`]), or of one librdkafka does not know (a misspelled
/// `sasl.password`, a Java `sasl.jaas.config` line). The property's name and librdkafka's reason
/// stay, to say what to fix. Every client created from the configuration maps its errors through it.
pub fn without_secret(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(result, reason, key, value)
            if !value.is_empty()
                && (is_secret_property(&key) || matches!(result, RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN)) =>
        {
            KafkaError::ClientConfig(result, reason.replace(&value, "<redacted>"), key, "<redacted>".into())
        }
        other => other,
    }
}

/// Parquet output and the cadence of durable checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Directory holding the `posts/`, `edges/`, `cascades/` and `cascade_merges/` datasets.
    pub dir: PathBuf,
    /// Flush (and then commit offsets) after this many posts…
    pub flush_rows: usize,
    /// …or after this many milliseconds, whichever comes first.
    pub flush_interval_ms: u64,
    /// Whether embedded posts keep their embedding in `posts.embedding` (for `cosine()` in SQL).
    pub store_embeddings: bool,
}

impl OutputConfig {
    /// The flush interval as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: PathBuf::from("echotrace-data"),
            flush_rows: 50_000,
            flush_interval_ms: 5_000,
            store_embeddings: true,
        }
    }
}

/// Snapshots of the detector and the scorer (`echotrace_core::state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of this instance's snapshot (`snapshot.bin`); empty: no snapshots, a restart
    /// starts with an empty window.
    pub dir: PathBuf,
    /// Write a snapshot, and commit the offsets it reflects, at most this often (seconds).
    pub snapshot_interval_secs: u64,
    /// When no snapshot can be restored, rebuild the window by reading the posts of the last
    /// `detector.window_secs` before the committed offsets again, with the sinks muted.
    pub rebuild_from_kafka: bool,
    /// Give up rebuilding after this long (seconds) and go on with what was read.
    pub rebuild_timeout_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("echotrace-state"),
            snapshot_interval_secs: 30,
            rebuild_from_kafka: true,
            rebuild_timeout_secs: 900,
        }
    }
}

impl StateConfig {
    /// The snapshot interval as a duration.
    pub fn snapshot_interval(&self) -> Duration {
        Duration::from_secs(self.snapshot_interval_secs)
    }
}

/// The HTTP server.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; loopback by default. Any other address requires a token.
    pub listen: SocketAddr,
    /// Token every request but `/healthz` and `/readyz` must present (`authorization: Bearer
    /// <token>`); empty: none.
    pub token: String,
    /// File holding the token (surrounding whitespace ignored), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Who may record review decisions in the explorer: reviewer name → that reviewer's token.
    /// A decision is recorded under the name of the token presented; with none configured,
    /// reviews are off.
    pub reviewers: BTreeMap<String, String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token: String::new(),
            token_file: None,
            reviewers: BTreeMap::new(),
        }
    }
}

impl HttpConfig {
    /// The configured token, from `token` or `token_file`; `None` when neither is set.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        crate::access::load_token("http", &self.token, self.token_file.as_ref())
    }
}

/// The Flight SQL server (`echotrace serve-sql`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Address to listen on; loopback by default. Any other address requires a token.
    pub listen: SocketAddr,
    /// Token every client must present (`authorization: Bearer <token>`); empty: none.
    pub token: String,
    /// File holding the token (surrounding whitespace ignored), instead of `token`.
    pub token_file: Option<PathBuf>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig { listen: SocketAddr::from(([127, 0, 0, 1], 32010)), token: String::new(), token_file: None }
    }
}

/// Leaves the token out, so that logging the configuration does not leak it.
fn redacted(token: &str) -> &'static str {
    if token.is_empty() { "" } else { "<redacted>" }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reviewers: Vec<(&String, &str)> =
            self.reviewers.iter().map(|(name, token)| (name, redacted(token))).collect();
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &redacted(&self.token))
            .field("token_file", &self.token_file)
            .field("reviewers", &reviewers)
            .finish()
    }
}

impl std::fmt::Debug for QueryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryConfig")
            .field("listen", &self.listen)
            .field("token", &redacted(&self.token))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl QueryConfig {
    /// The configured token, from `token` or `token_file`; `None` when neither is set.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        crate::access::load_token("query", &self.token, self.token_file.as_ref())
    }
}

/// Scoring and alerting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertingConfig {
    /// Rules file (TOML, see `deploy/rules.toml`); the built-in defaults when absent.
    pub rules_file: Option<PathBuf>,
    /// Sliding window of the cascade features, in seconds of event time.
    pub window_secs: u64,
    /// How often idle cascades with open alerts are re-evaluated, in seconds of event time.
    pub sweep_secs: u64,
    /// How long a cascade's features are kept after its last post, in seconds of event time (the
    /// span of the features counted over its life).
    pub history_secs: u64,
    /// At most this many alerts of one critical rule start paging per hour of event time; the
    /// rest are held and summarised in one `alert_flood` page (0: no limit).
    pub max_pages_per_hour: u32,
    /// The most cascades whose features are kept; past it those idle longest with no open alert
    /// are forgotten early (`echotrace_cascades_forgotten_early_total`).
    pub max_cascades: usize,
    /// The owners the scorer splits cascades over, by the hash of their ids, each keeping its
    /// share of `max_cascades`: in this process, or one `score` process each with
    /// `stage.score_stage`. The same alerts as one owner while no owner reaches its share (`docs/scaling.md`, "Built: owners of cascades, the scorer's half, as messages").
    pub cascade_owners: usize,
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093` (empty: do not push alerts).
    pub alertmanager_url: String,
    /// How often firing alerts are re-sent to Alertmanager, in milliseconds.
    pub resend_interval_ms: u64,
    /// Base URL of this instance's API as on-call reaches it, for the links in alerts (empty: the
    /// listen address).
    pub public_url: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            rules_file: None,
            window_secs: 300,
            sweep_secs: 10,
            history_secs: 3600,
            max_pages_per_hour: 10,
            max_cascades: echotrace_core::score::alerts::MAX_CASCADES,
            cascade_owners: 1,
            alertmanager_url: String::new(),
            resend_interval_ms: 30_000,
            public_url: String::new(),
        }
    }
}

/// The rules shipped with echotrace (`deploy/rules.toml`).
pub const DEFAULT_RULES: &str = include_str!("../../../deploy/rules.toml");

impl AlertingConfig {
    /// Loads the configured rules, or the built-in ones.
    pub fn rules(&self) -> anyhow::Result<echotrace_core::score::rules::RuleSet> {
        use anyhow::Context;
        let text = match &self.rules_file {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("cannot read rules file {}", path.display()))?
            }
            None => DEFAULT_RULES.to_owned(),
        };
        Ok(echotrace_core::score::rules::RuleSet::from_toml(&text)?)
    }

    /// The scorer's settings.
    pub fn score_config(&self) -> echotrace_core::score::alerts::ScoreConfig {
        echotrace_core::score::alerts::ScoreConfig {
            window_secs: self.window_secs,
            sweep_secs: self.sweep_secs,
            history_secs: self.history_secs,
            max_pages_per_hour: self.max_pages_per_hour,
            max_cascades: self.max_cascades,
            owners: self.cascade_owners,
        }
    }
}

/// Why the configuration could not be loaded. Figment's error is its message, not its source: as
/// a source it was printed a second time after the message in the command's error chain.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(Box<figment::Error>);

impl Config {
    /// Whether this process is a `detect` stage whose linking shards run as the `link` stage
    /// (`stage.link_stage`).
    pub fn links_over_kafka(&self) -> bool {
        self.stage.role == StageRole::Detect && self.stage.link_stage
    }

    /// Whether this process is a `detect` stage whose owners of cascades run as the `score` stage
    /// (`stage.score_stage`): it routes the scorer's records and raises no alert itself.
    pub fn scores_over_kafka(&self) -> bool {
        self.stage.role == StageRole::Detect && self.stage.score_stage
    }

    /// Loads defaults, then each TOML file in order (a later file's keys over an earlier's, as
    /// `deploy/static-encoder.toml` over `deploy/echotrace.toml`), then `ECHOTRACE_` environment
    /// variables.
    pub fn load(files: &[&Path]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        for file in files {
            if !file.exists() {
                return Err(ConfigError(Box::new(figment::Error::from(format!(
                    "config file {} does not exist",
                    file.display()
                )))));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only the configuration's own sections: other ECHOTRACE_ variables (ECHOTRACE_LOG,
        // ECHOTRACE_CONFIG, test switches) are not configuration keys.
        figment = figment.merge(
            Env::prefixed("ECHOTRACE_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    SECTIONS.iter().any(|section| key.strip_prefix(section).is_some_and(|rest| rest.starts_with("__")))
                })
                .split("__"),
        );
        figment.extract().map_err(|e| ConfigError(Box::new(without_secret_values(e))))
    }
}

/// `error` with the values it quotes left out where they may be secrets: anything under
/// `kafka.properties` (a malformed `ECHOTRACE_KAFKA__PROPERTIES` would be quoted whole, password
/// included) and the API tokens. The key and the type expected stay, to say what to fix.
fn without_secret_values(error: figment::Error) -> figment::Error {
    let errors: Vec<figment::Error> = error
        .into_iter()
        .map(|mut error| {
            let key = error.path.join(".").to_ascii_lowercase();
            if key.starts_with("kafka.properties") || key.ends_with("token") {
                match &mut error.kind {
                    Kind::InvalidType(actual, _)
                    | Kind::InvalidValue(actual, _)
                    | Kind::Unsupported(actual)
                    | Kind::UnsupportedKey(actual, _) => *actual = without_value(actual),
                    Kind::Message(message) => *message = "invalid value (not shown: it may be a secret)".into(),
                    _ => {}
                }
            }
            error
        })
        .collect();
    // Iterated newest first; chained back oldest first.
    errors.into_iter().rev().reduce(|older, newer| older.chain(newer)).expect("an error yields at least itself")
}

/// What kind of value `actual` is, without the value.
fn without_value(actual: &Actual) -> Actual {
    let kind = match actual {
        Actual::Bool(_) => "a bool",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "a byte string",
        Actual::Other(_) => "a value",
        structure => return structure.clone(),
    };
    Actual::Other(format!("{kind} (not shown: it may be a secret)"))
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "echotrace.toml",
                r#"
                [kafka]
                brokers = "k1:9092"
                input_topics = ["a", "b"]
                [kafka.properties]
                "security.protocol" = "SASL_SSL"
                [detector]
                max_hamming = 4
                "#,
            )?;
            jail.set_env("ECHOTRACE_KAFKA__GROUP_ID", "g2");
            jail.set_env("ECHOTRACE_OUTPUT__FLUSH_ROWS", "10");
            jail.set_env("ECHOTRACE_EMBED__DEVICE", "cuda");
            jail.set_env("ECHOTRACE_LOG", "debug");
            jail.set_env("ECHOTRACE_CONFIG", "elsewhere.toml");
            let config = Config::load(&[Path::new("echotrace.toml")]).expect("valid");
            assert_eq!(config.kafka.brokers, "k1:9092");
            assert_eq!(config.kafka.group_id, "g2");
            assert_eq!(config.kafka.input_topics, ["a", "b"]);
            assert_eq!(config.kafka.properties["security.protocol"], "SASL_SSL");
            assert_eq!(config.detector.max_hamming, 4);
            assert_eq!(config.detector.min_features, DetectorConfig::default().min_features);
            assert_eq!(config.output.flush_rows, 10);
            assert_eq!(config.embed.device, crate::embed::Device::Cuda);
            Ok(())
        });
    }

    #[test]
    fn a_later_file_overrides_an_earlier_ones_keys_and_keeps_the_rest() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("echotrace.toml", "[kafka]\nbrokers = \"k1:9092\"\n[detector.semantic]\ntop_k = 7\n")?;
            let shipped =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/static-encoder.toml"))
                    .expect("the shipped static encoder settings");
            jail.create_file("static-encoder.toml", &shipped)?;
            let config = Config::load(&[Path::new("echotrace.toml"), Path::new("static-encoder.toml")]).expect("valid");
            assert_eq!(config.kafka.brokers, "k1:9092");
            assert_eq!(config.detector.semantic.top_k, 7, "kept from the first file");
            assert_eq!(config.embed.encoder, crate::embed::Encoder::Static);
            assert_eq!(config.detector.semantic.lexical_top_k, 5);
            assert_ne!(config.detector.semantic.summary, DetectorConfig::default().semantic.summary);
            Ok(())
        });
    }

    #[test]
    fn every_section_can_be_set_from_the_environment() {
        let defaults = serde_json::to_value(Config::default()).expect("serializes");
        let mut sections: Vec<&str> = defaults.as_object().expect("a table").keys().map(String::as_str).collect();
        sections.sort_unstable();
        let mut listed = SECTIONS;
        listed.sort_unstable();
        assert_eq!(sections, listed);
    }

    #[test]
    fn secret_kafka_properties_stay_out_of_debug_and_configuration_errors() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "ECHOTRACE_KAFKA__PROPERTIES",
                r#"{"sasl.username"="echotrace","sasl.password"="s3cret-pa55"}"#,
            );
            let config = Config::load(&[]).expect("valid");
            assert_eq!(config.kafka.properties["sasl.password"], "s3cret-pa55", "passed through verbatim");
            let debug = format!("{config:?}");
            assert!(!debug.contains("s3cret-pa55"), "{debug}");
            assert!(debug.contains(r#""sasl.username": "echotrace""#), "other properties stay visible: {debug}");
            // Malformed: a missing brace (the whole value is one string), a number for a string.
            for (variable, malformed, secret) in [
                ("ECHOTRACE_KAFKA__PROPERTIES", r#"{"sasl.password"="s3cret-pa55""#, "s3cret-pa55"),
                ("ECHOTRACE_KAFKA__PROPERTIES", r#"{"sasl.password"=987654321}"#, "987654321"),
                ("ECHOTRACE_HTTP__TOKEN", "987654321", "987654321"),
            ] {
                jail.clear_env();
                jail.set_env(variable, malformed);
                let error = Config::load(&[]).expect_err("malformed").to_string();
                assert!(!error.contains(secret), "{error}");
                assert!(error.contains("not shown: it may be a secret"), "{error}");
            }
            jail.clear_env();
            jail.create_file("echotrace.toml", "[kafka.properties]\n\"sasl.password\" = 987654321\n")?;
            let error = Config::load(&[Path::new("echotrace.toml")]).expect_err("not a string").to_string();
            assert!(!error.contains("987654321") && error.contains("kafka.properties.sasl.password"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn refused_client_properties_leave_out_values_that_may_be_secrets() {
        let refused = |key: &str, value: &str| {
            let created = rdkafka::ClientConfig::new().set(key, value).create::<rdkafka::producer::BaseProducer>();
            without_secret(created.err().expect("refused")).to_string()
        };
        let jaas = refused(
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="s3cret-pa55";"#,
        );
        assert!(!jaas.contains("s3cret-pa55") && jaas.contains("sasl.jaas.config"), "{jaas}");
        let misspelled = refused("sasl.pasword", "s3cret-pa55");
        assert!(!misspelled.contains("s3cret-pa55") && misspelled.contains("sasl.pasword"), "{misspelled}");
        let invalid = refused("security.protocol", "SASL_PLAINTEXTT");
        assert!(invalid.contains("SASL_PLAINTEXTT"), "the values of other known properties stay: {invalid}");
    }

    #[test]
    fn reviewers_come_from_the_environment_and_their_tokens_stay_out_of_debug() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ECHOTRACE_HTTP__REVIEWERS", r#"{alice="t0ken-a", bob="t0ken-b"}"#);
            let config = Config::load(&[]).expect("valid");
            let names: Vec<&str> = config.http.reviewers.keys().map(String::as_str).collect();
            assert_eq!(names, ["alice", "bob"]);
            assert_eq!(config.http.reviewers["alice"], "t0ken-a");
            let debug = format!("{config:?}");
            assert!(debug.contains("alice") && !debug.contains("t0ken"), "names shown, tokens hidden: {debug}");
            Ok(())
        });
    }

    #[test]
    fn the_query_token_comes_from_the_environment_or_a_file() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Config::load(&[]).expect("defaults").query.token().unwrap(), None);
            jail.set_env("ECHOTRACE_QUERY__TOKEN", "s3cret");
            let config = Config::load(&[]).expect("valid");
            assert_eq!(config.query.token().unwrap().as_deref(), Some("s3cret"));
            assert!(!format!("{config:?}").contains("s3cret"), "the token stays out of Debug");
            jail.create_file("token", "fil3-token\n")?;
            jail.set_env("ECHOTRACE_QUERY__TOKEN_FILE", "token");
            assert!(Config::load(&[]).expect("valid").query.token().is_err(), "both set");
            jail.clear_env();
            jail.set_env("ECHOTRACE_QUERY__TOKEN_FILE", "token");
            assert_eq!(Config::load(&[]).expect("valid").query.token().unwrap().as_deref(), Some("fil3-token"));
            jail.clear_env();
            jail.set_env("ECHOTRACE_QUERY__TOKEN", "two words");
            assert!(Config::load(&[]).expect("valid").query.token().is_err());
            Ok(())
        });
    }

    #[test]
    fn the_shipped_rules_load() {
        let rules = AlertingConfig::default().rules().expect("deploy/rules.toml is valid");
        assert_eq!(rules.rules[0].name, "amplification_campaign");
    }

    #[test]
    fn the_shipped_relay_rule_needs_rounds_by_automated_accounts() {
        let rules = AlertingConfig::default().rules().expect("deploy/rules.toml is valid");
        let relay = rules.rules.iter().find(|r| r.name == "recursive_summarisation").expect("shipped rule");
        let people = echotrace_core::score::features::CascadeFeatures {
            summary_depth: 3,
            platforms: 3,
            posts_per_minute: 1.0,
            ..Default::default()
        };
        assert!(!relay.holds(&people), "people restating a headline and each other's posts");
        let two_bots = echotrace_core::score::features::CascadeFeatures {
            automated_summary_depth: 2,
            automated_authors: 2,
            ..people
        };
        assert!(!relay.holds(&two_bots), "two bot accounts restating one headline");
        assert!(relay.holds(&echotrace_core::score::features::CascadeFeatures { automated_authors: 4, ..two_bots }));
    }

    #[test]
    fn the_shipped_page_needs_a_half_automated_cascade_crossing_four_platforms_now() {
        let rules = AlertingConfig::default().rules().expect("deploy/rules.toml is valid");
        let page = rules.rules.iter().find(|r| r.name == "amplification_campaign").expect("shipped rule");
        let campaign = echotrace_core::score::features::CascadeFeatures {
            platforms: 4,
            platforms_last_hour: 4,
            distinct_authors: 4,
            automated_authors: 2,
            automated_author_share: 0.5,
            posts_per_minute: 0.4,
            ..Default::default()
        };
        assert!(page.holds(&campaign), "four posts on four platforms, two of them by bots");
        let organic = echotrace_core::score::features::CascadeFeatures {
            automated_authors: 0,
            automated_author_share: 0.0,
            distinct_authors: 40,
            posts_per_minute: 12.0,
            ..campaign.clone()
        };
        assert!(!page.holds(&organic), "a breaking-news burst of established accounts");
        let spread_over_hours = echotrace_core::score::features::CascadeFeatures { platforms_last_hour: 2, ..campaign };
        assert!(!page.holds(&spread_over_hours), "the same cascade crossing platforms over hours");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let err = Config::load(&[Path::new("bad.toml")]).unwrap_err().to_string();
            assert!(err.contains("brokerz"), "{err}");
            assert!(Config::load(&[Path::new("missing.toml")]).is_err());
            Ok(())
        });
    }
}
