//! The paging gate: the stage after the owners of cascades ([`super::owner`]).
//!
//! Owners make their alert events apart, each tagged with the post (the router's number) and the
//! step that made it ([`GateEntry`]). The gate merges them into the order one owner makes them
//! and passes them through the circuit breaker on paging ([`super::breaker`]), whose limit counts
//! across cascades. It passes a post's entries only once every owner is through with that post,
//! so owners in other processes, answering at their own pace, give the events of one.

use super::alerts::{AlertEvent, AlertState};
use super::breaker::{Admission, FLOOD_RULE, Flood, PageBreaker};
use super::features::CascadeFeatures;
use super::owner::CascadeInfo;
use super::rules::RuleSet;
use crate::detector::graph::CascadeId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Which step of a post made an entry; entries of one post pass in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GateStep {
    /// The handover of the post's `n`-th merge: the absorbed cascade's alerts resolve.
    Merge(u32),
    /// The post's own cascade.
    Post,
    /// A cascade the sweep after the post re-evaluated.
    Sweep(CascadeId),
    /// The sweep's end at this event time: quiet flood pages resolve.
    QuietFloods(DateTime<Utc>),
}

/// Alert events an owner made at one step of one post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEntry {
    /// The router's number of the post.
    pub seq: u64,
    /// The step.
    pub step: GateStep,
    /// The events, in the order the owner made them.
    pub events: Vec<AlertEvent>,
}

/// The circuit breaker as a gate on the alert events of the owners of cascades: it merges the
/// owners' entries into the order one owner makes them, decides which starting alerts are held,
/// marks every later event of a held alert as held, and adds the flood pages. The limit counts
/// across cascades, so it cannot be split with them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PageGate {
    breaker: PageBreaker,
    /// The open alerts it held: (cascade, rule name).
    held: HashSet<(CascadeId, String)>,
    /// For each owner, the number of the last post whose entries it has all sent.
    through: Vec<u64>,
    /// Entries taken and not yet passed, in the order they pass.
    waiting: BTreeMap<(u64, GateStep), Vec<AlertEvent>>,
}

impl PageGate {
    /// A gate on `owners` owners that lets `max_pages_per_hour` alerts of each critical rule page
    /// per hour.
    pub fn new(max_pages_per_hour: u32, owners: usize) -> PageGate {
        PageGate {
            breaker: PageBreaker::new(max_pages_per_hour),
            through: vec![0; owners.max(1)],
            ..PageGate::default()
        }
    }

    /// Takes what `owner` made of its records: its `entries`, and that it has processed every
    /// record of the posts up to `through`. Entries of posts it had sent before (an owner that
    /// restarted from its snapshot and processed records again) are passed over.
    pub fn take(&mut self, owner: usize, through: u64, entries: Vec<GateEntry>) {
        let sent = self.through[owner];
        // One owner makes each (post, step) once, the same again when it processes the records
        // again; the end of a sweep comes from every owner, with no events.
        for entry in entries.into_iter().filter(|entry| entry.seq > sent) {
            self.waiting.insert((entry.seq, entry.step), entry.events);
        }
        self.through[owner] = sent.max(through);
    }

    /// The number of the last post every owner is through with: its entries and those before it
    /// have passed.
    pub fn through(&self) -> u64 {
        self.through.iter().copied().min().unwrap_or(0)
    }

    /// Passes the entries of every post that each owner is through with, in order: a post's
    /// merges, its own cascade, its sweep's cascades by id, then the flood pages the sweep
    /// resolves.
    pub fn release(&mut self, rules: &RuleSet) -> Vec<AlertEvent> {
        let ready = self.through();
        let mut passed = Vec::new();
        while let Some(entry) = self.waiting.first_entry().filter(|entry| entry.key().0 <= ready) {
            let ((_, step), events) = entry.remove_entry();
            match step {
                GateStep::QuietFloods(now) => passed.extend(self.resolve_quiet(now)),
                _ => passed.extend(self.pass(rules, events)),
            }
        }
        passed
    }

    /// The limit of critical rules without their own.
    pub fn max_pages_per_hour(&self) -> u32 {
        self.breaker.max_pages_per_hour()
    }

    /// Goes on with `rules`, this limit and `owners` owners (a restart of one process with
    /// another configuration, whose owners were through with the same post): the held alerts of
    /// rules no longer in force are forgotten, as their phases are.
    pub fn resume(&mut self, rules: &RuleSet, max_pages_per_hour: u32, owners: usize) {
        self.breaker.set_max_pages_per_hour(max_pages_per_hour);
        self.held.retain(|(_, rule)| rules.rules.iter().any(|r| r.name == *rule));
        let through = self.through.iter().copied().max().unwrap_or(0);
        self.through.resize(owners.max(1), through);
    }

    /// Passes the owners' `events`, in order: an alert that starts is admitted or held (a flood
    /// page follows the first held one), any other event of an alert takes whether it was held.
    fn pass(&mut self, rules: &RuleSet, events: Vec<AlertEvent>) -> Vec<AlertEvent> {
        let mut passed = Vec::with_capacity(events.len());
        for mut event in events {
            let key =
                (CascadeId::parse(&event.cascade_id).expect("alerts name printed cascade ids"), event.rule.clone());
            let rule = rules.rules.iter().find(|r| r.name == event.rule);
            match rule.filter(|_| event.starts) {
                Some(rule) => {
                    let names =
                        CascadeInfo { root_post_id: event.root_post_id.clone(), platforms: event.platforms.clone() };
                    let admission = self.breaker.admit(rule, key.0, &names, event.event_time);
                    event.held = admission != Admission::Sent;
                    if event.held {
                        self.held.insert(key);
                    }
                    let at = event.event_time;
                    passed.push(event);
                    if admission == (Admission::Held { flood_starts: true }) {
                        let flood = self.breaker.flood(&rule.name).expect("a flood opened");
                        let mut flood_starts = flood_event(&rule.name, flood, AlertState::Firing, at);
                        flood_starts.starts = true;
                        passed.push(flood_starts);
                    }
                }
                None if event.state == AlertState::Resolved => {
                    event.held = self.held.remove(&key);
                    passed.push(event);
                }
                None => {
                    event.held = self.held.contains(&key);
                    passed.push(event);
                }
            }
        }
        passed
    }

    /// Marks which of `firing` (the open alerts a restarted scorer lists) were held.
    pub fn mark(&self, firing: &mut [AlertEvent]) {
        for event in firing {
            let cascade = CascadeId::parse(&event.cascade_id).expect("alerts name printed cascade ids");
            event.held = self.held.contains(&(cascade, event.rule.clone()));
        }
    }

    /// Resolves the flood pages that have held nothing for an hour at `now`.
    fn resolve_quiet(&mut self, now: DateTime<Utc>) -> Vec<AlertEvent> {
        let resolved = self.breaker.resolve_quiet(now);
        resolved.iter().map(|(rule, flood)| flood_event(rule, flood, AlertState::Resolved, now)).collect()
    }
}

/// The page that stands for the held alerts of `rule`.
fn flood_event(rule: &str, flood: &Flood, state: AlertState, at: DateTime<Utc>) -> AlertEvent {
    AlertEvent {
        alert_id: super::alerts::alert_id(rule, FLOOD_RULE),
        rule: FLOOD_RULE.to_owned(),
        severity: "critical".to_owned(),
        summary: format!(
            "Rule {rule} started more than {} alerts in an hour: the rest are held (stored in alerts/ with held = \
             true, not paged)",
            flood.limit
        ),
        cascade_id: flood.cascade_id.to_string(),
        root_post_id: flood.names.root_post_id.clone(),
        platforms: flood.names.platforms.clone(),
        state,
        starts: false,
        event_time: at,
        started_at: flood.started_at,
        triggered_by: None,
        merged_into: None,
        evidence: BTreeMap::from([
            ("held_alerts".to_owned(), f64::from(flood.held)),
            ("max_per_hour".to_owned(), f64::from(flood.limit)),
        ]),
        shadow: false,
        held: false,
        features: CascadeFeatures::default(),
    }
}
