//! The alert lifecycle: pending → firing → resolved, one alert per cascade and rule, on event time.
//!
//! [`Scorer::observe`] is called with every detection. It updates the cascade's
//! [`CascadeActivity`], evaluates every rule for that cascade at the post's event time, and returns
//! the alert events that happened: an alert fires once its conditions have held for the rule's
//! `for_secs`; while firing it is re-emitted each time the cascade doubles in size (so on-call sees
//! it grow); it resolves once its conditions have failed for `keep_firing_secs`. Cascades that
//! receive no posts are re-evaluated as event time moves on, so a campaign that stops resolves.
//! When cascades merge, the absorbed cascade's alerts resolve, marked with the cascade they merged
//! into, and the merged cascade is evaluated as one.
//!
//! Everything runs on event time, so replaying a stream raises the same alerts at the same stream
//! times as the live run did.

use super::features::{CO_SIMILAR_WITHIN, CascadeActivity, CascadeFeatures, CascadeShape, PostSignals};
use super::rules::{Rule, RuleSet};
use crate::detector::Detection;
use crate::records::EdgeKind;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use xxhash_rust::xxh3::xxh3_64;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The rule holds (and has for its `for` duration).
    Firing,
    /// The rule stopped holding, or the cascade merged into another.
    Resolved,
}

impl AlertState {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert state change (or growth update), as stored in `alerts/` and sent to Alertmanager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Stable id of the alert: a hash of cascade and rule.
    pub alert_id: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: String,
    /// The rule's one-line summary.
    pub summary: String,
    /// The cascade.
    pub cascade_id: String,
    /// Its root post.
    pub root_post_id: String,
    /// Its platforms.
    pub platforms: Vec<String>,
    /// Firing or resolved.
    pub state: AlertState,
    /// Event time of the post (or watermark) that caused this change.
    pub event_time: DateTime<Utc>,
    /// Event time at which the alert started firing.
    pub started_at: DateTime<Utc>,
    /// The post whose arrival made the change, if a post did.
    pub triggered_by: Option<String>,
    /// The cascade an absorbed cascade's alert merged into.
    pub merged_into: Option<String>,
    /// The features the rule reads, with their values.
    pub evidence: BTreeMap<String, f64>,
    /// All features at the time.
    pub features: CascadeFeatures,
}

/// Where one (cascade, rule) pair stands.
#[derive(Debug, Clone)]
enum Phase {
    Pending { since: DateTime<Utc> },
    Firing { started_at: DateTime<Utc>, reported_size: u64, failing_since: Option<DateTime<Utc>> },
}

/// Identity of the cascade an alert is about.
#[derive(Debug, Clone)]
struct CascadeInfo {
    root_post_id: String,
    platforms: Vec<String>,
}

/// Scoring configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreConfig {
    /// Length of the sliding window for rates, in seconds of event time.
    pub window_secs: u64,
    /// How often idle cascades with open alerts are re-evaluated, in seconds of event time.
    pub sweep_secs: u64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig { window_secs: 300, sweep_secs: 10 }
    }
}

/// Features, rules and alert lifecycles of every cascade.
pub struct Scorer {
    rules: RuleSet,
    window: Duration,
    sweep: Duration,
    activity: HashMap<String, CascadeActivity>,
    info: HashMap<String, CascadeInfo>,
    phases: HashMap<(String, usize), Phase>,
    /// Authors of recent posts, for co-similarity: post id → (author, event time).
    authors: HashMap<String, (String, DateTime<Utc>)>,
    authors_ring: VecDeque<(DateTime<Utc>, String)>,
    watermark: Option<DateTime<Utc>>,
    last_sweep: Option<DateTime<Utc>>,
}

impl Scorer {
    /// A scorer with these rules.
    pub fn new(rules: RuleSet, config: &ScoreConfig) -> Scorer {
        Scorer {
            rules,
            window: Duration::seconds(config.window_secs as i64),
            sweep: Duration::seconds(config.sweep_secs.max(1) as i64),
            activity: HashMap::new(),
            info: HashMap::new(),
            phases: HashMap::new(),
            authors: HashMap::new(),
            authors_ring: VecDeque::new(),
            watermark: None,
            last_sweep: None,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.rules.rules
    }

    /// Current features of a cascade at the watermark.
    pub fn features(&mut self, cascade_id: &str) -> Option<CascadeFeatures> {
        let watermark = self.watermark?;
        let activity = self.activity.get_mut(cascade_id)?;
        activity.slide(watermark, self.window);
        Some(activity.features(watermark, self.window))
    }

    /// Takes in one detection and the signals of its post; returns the alert events it caused.
    pub fn observe(&mut self, detection: &Detection, signals: &PostSignals) -> Vec<AlertEvent> {
        let at = detection.post.created_at;
        let mut events = Vec::new();
        let cascade = detection.cascade.cascade_id.clone();
        for merge in &detection.merges {
            events.extend(self.absorb(&merge.absorbed_cascade_id, &merge.into_cascade_id, at));
        }
        let co_similar_author = detection
            .edges
            .iter()
            .filter(|e| matches!(e.kind, EdgeKind::NearDuplicate | EdgeKind::SharedUrl))
            .filter(|e| e.time_delta_ms.is_some_and(|d| d.abs() <= CO_SIMILAR_WITHIN.num_milliseconds()))
            .find_map(|e| {
                let other = if e.child_id == detection.post.post_id { &e.parent_id } else { &e.child_id };
                self.authors.get(other).map(|(author, _)| author.clone())
            });
        self.remember_author(&detection.post.post_id, &signals.author_id, at);
        let record = &detection.cascade;
        self.info.insert(
            cascade.clone(),
            CascadeInfo { root_post_id: record.root_post_id.clone(), platforms: record.platforms.clone() },
        );
        self.activity.entry(cascade.clone()).or_default().record(
            at,
            signals,
            co_similar_author.as_deref(),
            CascadeShape {
                size: record.size,
                depth: record.depth,
                summary_depth: record.summary_depth,
                automated_summary_depth: record.automated_summary_depth,
                platforms: record.platforms.len() as u32,
            },
        );
        let watermark = self.watermark.map_or(at, |w| w.max(at));
        self.watermark = Some(watermark);
        events.extend(self.evaluate(&cascade, at, Some(&detection.post.post_id)));
        if self.last_sweep.is_none_or(|last| watermark - last >= self.sweep) {
            self.last_sweep = Some(watermark);
            events.extend(self.sweep(watermark, &cascade));
        }
        events
    }

    fn remember_author(&mut self, post_id: &str, author: &str, at: DateTime<Utc>) {
        self.authors.insert(post_id.to_owned(), (author.to_owned(), at));
        self.authors_ring.push_back((at, post_id.to_owned()));
        let horizon = self.watermark.unwrap_or(at) - CO_SIMILAR_WITHIN;
        while self.authors_ring.front().is_some_and(|(t, _)| *t < horizon) {
            let (_, id) = self.authors_ring.pop_front().expect("checked");
            self.authors.remove(&id);
        }
    }

    /// Re-evaluates cascades with open alerts that the current post did not touch, and forgets
    /// cascades that have been idle for a whole window with nothing open.
    fn sweep(&mut self, now: DateTime<Utc>, touched: &str) -> Vec<AlertEvent> {
        let mut open: Vec<String> =
            self.phases.keys().map(|(cascade, _)| cascade.clone()).filter(|c| c != touched).collect();
        open.sort();
        open.dedup();
        let mut events = Vec::new();
        for cascade in open {
            events.extend(self.evaluate(&cascade, now, None));
        }
        let window = self.window;
        let phases = &self.phases;
        self.activity.retain(|cascade, activity| {
            let idle = activity.last_post_at().is_none_or(|last| now - last > window);
            !idle || phases.keys().any(|(c, _)| c == cascade)
        });
        let activity = &self.activity;
        self.info.retain(|cascade, _| activity.contains_key(cascade));
        events
    }

    fn evaluate(&mut self, cascade: &str, now: DateTime<Utc>, trigger: Option<&str>) -> Vec<AlertEvent> {
        let Some(activity) = self.activity.get_mut(cascade) else { return Vec::new() };
        activity.slide(now, self.window);
        let features = activity.features(now, self.window);
        let mut events = Vec::new();
        for (index, rule) in self.rules.rules.iter().enumerate() {
            let key = (cascade.to_owned(), index);
            let holds = rule.holds(&features);
            let for_duration = Duration::seconds(rule.for_secs as i64);
            let keep_firing = Duration::seconds(rule.keep_firing_secs as i64);
            let next = match (self.phases.get(&key).cloned(), holds) {
                (None | Some(Phase::Pending { .. }), false) => None,
                (None, true) if rule.for_secs > 0 => Some(Phase::Pending { since: now }),
                (Some(Phase::Pending { since }), true) if now - since < for_duration => Some(Phase::Pending { since }),
                (None | Some(Phase::Pending { .. }), true) => {
                    events.push(self.event(rule, cascade, AlertState::Firing, now, now, trigger, &features));
                    Some(Phase::Firing { started_at: now, reported_size: features.size, failing_since: None })
                }
                (Some(Phase::Firing { started_at, reported_size, .. }), true) => {
                    let grown = features.size >= reported_size.saturating_mul(2);
                    if grown {
                        events.push(self.event(rule, cascade, AlertState::Firing, now, started_at, trigger, &features));
                    }
                    let reported_size = if grown { features.size } else { reported_size };
                    Some(Phase::Firing { started_at, reported_size, failing_since: None })
                }
                (Some(Phase::Firing { started_at, reported_size, failing_since }), false) => {
                    let since = failing_since.unwrap_or(now);
                    if now - since >= keep_firing {
                        events.push(self.event(
                            rule,
                            cascade,
                            AlertState::Resolved,
                            now,
                            started_at,
                            trigger,
                            &features,
                        ));
                        None
                    } else {
                        Some(Phase::Firing { started_at, reported_size, failing_since: Some(since) })
                    }
                }
            };
            match next {
                Some(phase) => self.phases.insert(key, phase),
                None => self.phases.remove(&key),
            };
        }
        events
    }

    /// Resolves the absorbed cascade's alerts and folds its activity into the survivor's.
    fn absorb(&mut self, absorbed: &str, into: &str, at: DateTime<Utc>) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let features = self.features(absorbed).unwrap_or_default();
        for (index, rule) in self.rules.rules.iter().enumerate() {
            if let Some(Phase::Firing { started_at, .. }) = self.phases.remove(&(absorbed.to_owned(), index)) {
                let mut event = self.event(rule, absorbed, AlertState::Resolved, at, started_at, None, &features);
                event.merged_into = Some(into.to_owned());
                events.push(event);
            }
        }
        if let Some(activity) = self.activity.remove(absorbed) {
            self.activity.entry(into.to_owned()).or_default().absorb(activity);
        }
        self.info.remove(absorbed);
        events
    }

    #[allow(clippy::too_many_arguments)] // one event, described field by field
    fn event(
        &self,
        rule: &Rule,
        cascade: &str,
        state: AlertState,
        at: DateTime<Utc>,
        started_at: DateTime<Utc>,
        trigger: Option<&str>,
        features: &CascadeFeatures,
    ) -> AlertEvent {
        let info = self.info.get(cascade);
        AlertEvent {
            alert_id: alert_id(cascade, &rule.name),
            rule: rule.name.clone(),
            severity: rule.severity.clone(),
            summary: rule.summary.clone(),
            cascade_id: cascade.to_owned(),
            root_post_id: info.map(|i| i.root_post_id.clone()).unwrap_or_default(),
            platforms: info.map(|i| i.platforms.clone()).unwrap_or_default(),
            state,
            event_time: at,
            started_at,
            triggered_by: trigger.map(str::to_owned),
            merged_into: None,
            evidence: rule.evidence(features),
            features: features.clone(),
        }
    }
}

/// The id of the alert of `rule` on `cascade_id`: the same on every run over the same stream.
pub fn alert_id(cascade_id: &str, rule: &str) -> String {
    format!("a{:016x}", xxh3_64(format!("{cascade_id}\u{1f}{rule}").as_bytes()))
}
