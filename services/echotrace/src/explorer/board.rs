//! The alert board: the alerts this instance raised since it started (and those firing when its
//! state was restored), each with its lifecycle, for the explorer's lists and alert views.
//!
//! The pipeline records every alert event it stores. The board is bounded: it keeps every open
//! alert and the [`MAX_ALERTS`] most recently changed in all, forgetting resolved ones first, and
//! each alert's last [`MAX_STEPS`] lifecycle steps after its first. The `alerts/` dataset keeps
//! everything; the alert view gives the SQL that reads it.

use chrono::{DateTime, Utc};
use echotrace_core::score::alerts::{AlertEvent, AlertState};
use echotrace_core::score::features::CascadeFeatures;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Alerts kept at most; resolved ones are forgotten first, the least recently changed first.
pub const MAX_ALERTS: usize = 10_000;
/// Lifecycle steps kept per alert after its first.
pub const MAX_STEPS: usize = 200;

/// One change of an alert: its start, a growth update, or its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleStep {
    /// Firing or resolved.
    pub state: AlertState,
    /// Whether this step started the alert.
    pub starts: bool,
    /// Event time of the change.
    pub event_time: DateTime<Utc>,
    /// The post whose arrival made the change, if a post did.
    pub triggered_by: Option<String>,
    /// The cascade's size then.
    pub cascade_size: u64,
    /// Held by the circuit breaker instead of paging.
    pub held: bool,
    /// The cascade it merged into, when a merge resolved it.
    pub merged_into: Option<String>,
}

/// An alert as the explorer's list shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSummary {
    /// Stable id: a hash of cascade and rule.
    pub alert_id: String,
    /// The rule's name.
    pub rule: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    /// The rule's one-line summary.
    pub summary: String,
    /// The cascade.
    pub cascade_id: String,
    /// Its root post.
    pub root_post_id: String,
    /// Its platforms at the last change.
    pub platforms: Vec<String>,
    /// Firing or resolved.
    pub state: AlertState,
    /// When it started firing (event time).
    pub started_at: DateTime<Utc>,
    /// Its last change (event time).
    pub last_change_at: DateTime<Utc>,
    /// The cascade's size at the last change.
    pub cascade_size: u64,
    /// A rule on trial: never paged.
    pub shadow: bool,
    /// Held by the circuit breaker.
    pub held: bool,
}

/// An alert with everything its view shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertDetail {
    /// What the list shows.
    #[serde(flatten)]
    pub summary: AlertSummary,
    /// The rule's conditions, feature → condition.
    pub conditions: BTreeMap<String, String>,
    /// The features the rule reads, with their values at the last change.
    pub evidence: BTreeMap<String, f64>,
    /// Every feature at the last change.
    pub features: CascadeFeatures,
    /// Its changes, oldest first.
    pub lifecycle: Vec<LifecycleStep>,
    /// Whether older steps were dropped (see [`MAX_STEPS`]).
    pub lifecycle_truncated: bool,
    /// SQL over the datasets that shows this alert's rows and the posts that raised it.
    pub sql: String,
}

struct Entry {
    latest: AlertEvent,
    first: LifecycleStep,
    recent: Vec<LifecycleStep>,
    truncated: bool,
    /// Order of the last change, for forgetting the least recent.
    changed: u64,
}

/// The alerts raised, keyed by id.
#[derive(Default)]
pub struct AlertBoard {
    alerts: HashMap<String, Entry>,
    conditions: HashMap<String, BTreeMap<String, String>>,
    changes: u64,
}

impl AlertBoard {
    /// A board for rules with these conditions (rule name → feature → condition).
    pub fn new(conditions: HashMap<String, BTreeMap<String, String>>) -> AlertBoard {
        AlertBoard { conditions, ..AlertBoard::default() }
    }

    /// Records one alert event.
    pub fn record(&mut self, event: &AlertEvent) {
        self.changes += 1;
        let step = LifecycleStep {
            state: event.state,
            starts: event.starts,
            event_time: event.event_time,
            triggered_by: event.triggered_by.clone(),
            cascade_size: event.features.size,
            held: event.held,
            merged_into: event.merged_into.clone(),
        };
        match self.alerts.get_mut(&event.alert_id) {
            Some(entry) => {
                entry.latest = event.clone();
                entry.recent.push(step);
                if entry.recent.len() > MAX_STEPS {
                    entry.recent.remove(0);
                    entry.truncated = true;
                }
                entry.changed = self.changes;
            }
            None => {
                let entry = Entry {
                    latest: event.clone(),
                    first: step,
                    recent: Vec::new(),
                    truncated: false,
                    changed: self.changes,
                };
                self.alerts.insert(event.alert_id.clone(), entry);
            }
        }
        if self.alerts.len() > MAX_ALERTS {
            self.forget_one();
        }
    }

    /// Forgets the least recently changed resolved alert, or the least recently changed one if
    /// every alert is open.
    fn forget_one(&mut self) {
        let oldest = |resolved_only: bool| {
            self.alerts
                .iter()
                .filter(|(_, entry)| !resolved_only || entry.latest.state == AlertState::Resolved)
                .min_by_key(|(_, entry)| entry.changed)
                .map(|(id, _)| id.clone())
        };
        if let Some(id) = oldest(true).or_else(|| oldest(false)) {
            self.alerts.remove(&id);
        }
    }

    /// Every alert on the board, the most recently changed first.
    pub fn list(&self) -> Vec<AlertSummary> {
        let mut entries: Vec<&Entry> = self.alerts.values().collect();
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.changed));
        entries.into_iter().map(summary).collect()
    }

    /// One alert with its lifecycle, conditions, features and SQL.
    pub fn detail(&self, alert_id: &str) -> Option<AlertDetail> {
        let entry = self.alerts.get(alert_id)?;
        let event = &entry.latest;
        let lifecycle = std::iter::once(entry.first.clone()).chain(entry.recent.iter().cloned()).collect();
        Some(AlertDetail {
            summary: summary(entry),
            conditions: self.conditions.get(&event.rule).cloned().unwrap_or_default(),
            evidence: event.evidence.clone(),
            features: event.features.clone(),
            lifecycle,
            lifecycle_truncated: entry.truncated,
            sql: reproducing_sql(event),
        })
    }
}

fn summary(entry: &Entry) -> AlertSummary {
    let event = &entry.latest;
    AlertSummary {
        alert_id: event.alert_id.clone(),
        rule: event.rule.clone(),
        severity: event.severity.clone(),
        summary: event.summary.clone(),
        cascade_id: event.cascade_id.clone(),
        root_post_id: event.root_post_id.clone(),
        platforms: event.platforms.clone(),
        state: event.state,
        started_at: event.started_at,
        last_change_at: event.event_time,
        cascade_size: event.features.size,
        shadow: event.shadow,
        held: event.held,
    }
}

/// SQL for `echotrace query`: the alert's rows, then the posts of its cascade (with those of
/// cascades merged into it).
fn reproducing_sql(event: &AlertEvent) -> String {
    let alert_id = event.alert_id.replace('\'', "''");
    format!(
        "-- the alert's lifecycle\n\
         SELECT event_time, state, starts, held, triggered_by, evidence FROM alerts\n\
         WHERE alert_id = '{alert_id}' ORDER BY event_time;\n\
         -- the posts of its cascade\n{};",
        crate::alerting::alert_sql(&event.cascade_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event(alert_id: &str, state: AlertState, starts: bool, minute: u32) -> AlertEvent {
        let time = Utc.with_ymd_and_hms(2026, 12, 5, 10, minute, 0).unwrap();
        AlertEvent {
            alert_id: alert_id.into(),
            rule: "cross_platform_spread".into(),
            severity: "critical".into(),
            summary: "spreads".into(),
            cascade_id: "c1".into(),
            root_post_id: "x:1".into(),
            platforms: vec!["x".into()],
            state,
            starts,
            event_time: time,
            started_at: Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap(),
            triggered_by: None,
            merged_into: None,
            evidence: BTreeMap::new(),
            shadow: false,
            held: false,
            features: CascadeFeatures::default(),
        }
    }

    #[test]
    fn an_alert_keeps_one_entry_with_its_lifecycle_in_order() {
        let mut board = AlertBoard::default();
        board.record(&event("a", AlertState::Firing, true, 0));
        board.record(&event("a", AlertState::Firing, false, 1));
        board.record(&event("a", AlertState::Resolved, false, 2));
        let detail = board.detail("a").expect("recorded");
        let states: Vec<(AlertState, bool)> = detail.lifecycle.iter().map(|s| (s.state, s.starts)).collect();
        assert_eq!(states, [(AlertState::Firing, true), (AlertState::Firing, false), (AlertState::Resolved, false)]);
        assert_eq!(detail.summary.state, AlertState::Resolved);
        assert_eq!(board.list().len(), 1);
        assert!(detail.sql.contains("alert_id = 'a'"));
    }

    #[test]
    fn past_the_bound_resolved_alerts_go_first_and_open_ones_stay() {
        let mut board = AlertBoard::default();
        board.record(&event("open", AlertState::Firing, true, 0));
        for i in 0..MAX_ALERTS {
            board.record(&event(&format!("r{i}"), AlertState::Resolved, false, 1));
        }
        assert_eq!(board.list().len(), MAX_ALERTS);
        assert!(board.detail("open").is_some(), "an open alert is never forgotten while resolved ones remain");
        assert!(board.detail("r0").is_none(), "the least recently changed resolved alert went first");
    }

    #[test]
    fn a_long_lifecycle_keeps_its_start_and_its_last_steps() {
        let mut board = AlertBoard::default();
        board.record(&event("a", AlertState::Firing, true, 0));
        for _ in 0..MAX_STEPS + 5 {
            board.record(&event("a", AlertState::Firing, false, 1));
        }
        let detail = board.detail("a").expect("recorded");
        assert_eq!(detail.lifecycle.len(), MAX_STEPS + 1);
        assert!(detail.lifecycle[0].starts);
        assert!(detail.lifecycle_truncated);
    }
}
