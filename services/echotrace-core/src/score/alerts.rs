//! The alert lifecycle: pending → firing → resolved, one alert per cascade and rule, on event time.
//!
//! [`Scorer::observe`] is called with every detection. It updates the cascade's
//! [`CascadeActivity`](super::features::CascadeActivity), evaluates every rule for that cascade at
//! the post's event time, and returns the alert events that happened: an alert fires once its
//! conditions have held for the rule's `for_secs`; while firing it is re-emitted each time the
//! cascade doubles in size (so on-call sees it grow); it resolves once its conditions have failed
//! for `keep_firing_secs`. Cascades that receive no posts are re-evaluated as event time moves
//! on, so a campaign that stops resolves.
//! When cascades merge, the absorbed cascade's alerts resolve, marked with the cascade they merged
//! into, and the merged cascade is evaluated as one.
//!
//! Everything runs on event time, so replaying a stream raises the same alerts at the same stream
//! times as the live run did.

use super::features::{CascadeFeatures, PostSignals};
use super::gate::PageGate;
use super::owner::{CascadeOwner, Lifecycle};
use super::router::{OwnerRecord, ScoreRouter};
use super::rules::{Rule, RuleSet};
use crate::detector::Detection;
use crate::detector::graph::CascadeId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Whether this event starts the alert; a firing event that does not is an update as its
    /// cascade grows (`started_at` alone cannot tell: an update may come within the same second).
    #[serde(default)]
    pub starts: bool,
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
    /// Raised by a rule on trial ([`Rule::shadow`]): stored and counted, never sent to Alertmanager.
    #[serde(default)]
    pub shadow: bool,
    /// Held by the circuit breaker ([`super::breaker`]): its rule already paged its hourly limit, so
    /// it is stored and counted, and summarised in one `alert_flood` page instead of paging.
    #[serde(default)]
    pub held: bool,
    /// All features at the time.
    pub features: CascadeFeatures,
}

/// Scoring configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreConfig {
    /// Length of the sliding window for rates, in seconds of event time.
    pub window_secs: u64,
    /// How often idle cascades with open alerts are re-evaluated, in seconds of event time.
    pub sweep_secs: u64,
    /// How long a cascade's activity is kept after its last post, in seconds of event time: the
    /// span of the features counted over the cascade's life (`automated_authors`, ...). At least
    /// `window_secs`.
    pub history_secs: u64,
    /// At most this many alerts of one critical rule start paging per hour of event time (0: no
    /// limit); the rest are held ([`super::breaker`]).
    pub max_pages_per_hour: u32,
    /// The most cascades whose activity is kept, whatever their time: past it those idle longest
    /// with no open alert are forgotten early (counted in [`Scorer::forgotten_early`]). What bounds
    /// the scorer's memory when the rate jumps. Split evenly over the owners: each keeps its share.
    pub max_cascades: usize,
    /// The owners the cascades are split over by the hash of their ids ([`super::owner`]); the
    /// same alerts for any number, while no owner reaches its share of `max_cascades`. 0 counts
    /// as 1.
    pub owners: usize,
}

/// The default bound on the cascades the scorer keeps ([`ScoreConfig::max_cascades`]): as many
/// as the detector's default window holds posts.
pub const MAX_CASCADES: usize = crate::detector::MAX_WINDOW_POSTS;

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            window_secs: 300,
            sweep_secs: 10,
            history_secs: 3600,
            max_pages_per_hour: 10,
            max_cascades: MAX_CASCADES,
            owners: 1,
        }
    }
}

/// Everything the scorer remembers: all of its state but the rules, and what a snapshot holds
/// ([`crate::state`]). Alert phases are keyed by rule name, not by the rule's place in the file, so
/// a restart with an edited rules file keeps the phases of the rules it still has.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ScorerState {
    /// What crosses cascades: posts numbered, recent authors, event time, the last sweep.
    router: ScoreRouter,
    /// The cascades, split over their owners by the hash of their ids.
    owners: Vec<CascadeOwner>,
    gate: PageGate,
}

/// Features, rules and alert lifecycles of every cascade.
///
/// The scorer is the three parts of the staged design in one process: the router
/// ([`ScoreRouter`]) turns each detection into records for the owners of the cascades it touches,
/// [`ScoreConfig::owners`] owners ([`super::owner`]) make their cascades' alert events and hand
/// merged cascades over to each other, and the paging gate ([`PageGate`]) passes the events in the
/// order one owner makes them.
pub struct Scorer {
    lifecycle: Lifecycle,
    sweep: Duration,
    state: ScorerState,
}

impl Scorer {
    /// A scorer with these rules.
    pub fn new(rules: RuleSet, config: &ScoreConfig) -> Scorer {
        let owners = config.owners.max(1);
        Scorer {
            lifecycle: Lifecycle::new(rules, config),
            sweep: Duration::seconds(config.sweep_secs.max(1) as i64),
            state: ScorerState {
                router: ScoreRouter::default(),
                owners: vec![CascadeOwner::default(); owners],
                gate: PageGate::new(config.max_pages_per_hour, owners),
            },
        }
    }

    /// Goes on from `state` (a snapshot's) with this scorer's rules and settings: the phases of
    /// rules no longer in force are dropped, the circuit breaker takes this scorer's limit, and
    /// the cascades are split again if the number of owners changed.
    pub fn resume(&mut self, mut state: ScorerState) {
        let owners = self.state.owners.len();
        if state.owners.len() != owners {
            state.owners = CascadeOwner::split(std::mem::take(&mut state.owners), owners);
        }
        for owner in &mut state.owners {
            owner.keep_rules(&self.lifecycle.rules);
        }
        state.gate.resume(&self.lifecycle.rules, self.state.gate.max_pages_per_hour(), owners);
        self.state = state;
    }

    /// The alerts firing now, as firing events at the watermark with their first `started_at`: what
    /// a restarted process hands its Alertmanager dispatcher, so that it keeps re-sending them.
    pub fn firing(&mut self) -> Vec<AlertEvent> {
        let Some(now) = self.state.router.watermark() else { return Vec::new() };
        let mut firing: Vec<AlertEvent> =
            self.state.owners.iter_mut().flat_map(|owner| owner.firing(&self.lifecycle, now)).collect();
        firing.sort_by(|a, b| (&a.cascade_id, &a.rule).cmp(&(&b.cascade_id, &b.rule)));
        self.state.gate.mark(&mut firing);
        firing
    }

    /// Cascades forgotten before `history_secs` because the scorer kept `max_cascades`.
    pub fn forgotten_early(&self) -> u64 {
        self.state.owners.iter().map(CascadeOwner::forgotten_early).sum()
    }

    /// Cascades whose activity is kept.
    pub fn tracked_cascades(&self) -> usize {
        self.state.owners.iter().map(CascadeOwner::tracked_cascades).sum()
    }

    /// Its state, for a snapshot.
    pub fn state(&self) -> &ScorerState {
        &self.state
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.lifecycle.rules.rules
    }

    /// Current features of a cascade at the watermark.
    pub fn features(&mut self, cascade_id: &str) -> Option<CascadeFeatures> {
        let (cascade, now) = (CascadeId::parse(cascade_id)?, self.state.router.watermark()?);
        let owners = self.state.owners.len();
        self.state.owners[cascade.partition(owners)].features(&self.lifecycle, cascade, now)
    }

    /// The router's records for one detection, each with its owner: where the owners run as
    /// processes of their own (the `score` stage), the records they are sent.
    pub fn route(&mut self, detection: &Detection, signals: &PostSignals) -> Vec<(usize, OwnerRecord)> {
        self.state.router.route(detection, signals, self.sweep, self.state.owners.len())
    }

    /// Takes in one detection and the signals of its post; returns the alert events it caused.
    ///
    /// The router's records go to their owners, the handovers they make to the owners of the
    /// surviving cascades (an owner holds a record until its handovers came, as one in another
    /// process would), and the owners' entries through the gate.
    pub fn observe(&mut self, detection: &Detection, signals: &PostSignals) -> Vec<AlertEvent> {
        let owners = self.state.owners.len();
        let records = self.route(detection, signals);
        let through = self.state.router.routed();
        let mut by_owner: Vec<Vec<OwnerRecord>> = vec![Vec::new(); owners];
        for (owner, record) in records {
            by_owner[owner].push(record);
        }
        let mut handovers = Vec::new();
        for (owner, records) in by_owner.into_iter().enumerate() {
            let output = self.state.owners[owner].receive(&self.lifecycle, through, records);
            handovers.extend(output.handovers);
            self.state.gate.take(owner, output.through, output.entries);
        }
        while let Some(handover) = handovers.pop() {
            let owner = handover.into.partition(owners);
            let output = self.state.owners[owner].receive_handover(&self.lifecycle, handover);
            handovers.extend(output.handovers);
            self.state.gate.take(owner, output.through, output.entries);
        }
        self.state.gate.release(&self.lifecycle.rules)
    }
}

/// The id of the alert of `rule` on `cascade_id`: the same on every run over the same stream.
pub fn alert_id(cascade_id: &str, rule: &str) -> String {
    format!("a{:016x}", xxh3_64(format!("{cascade_id}\u{1f}{rule}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::{Detector, DetectorConfig};
    use crate::post::Post;
    use crate::score::breaker::FLOOD_RULE;

    /// Texts that share nothing, one per story.
    const STORIES: [&str; 6] = [
        "harbour cranes idle after the strike vote",
        "violin maker restores a cracked cello",
        "glacier retreat measured from orbit",
        "midfielder signs a three year contract",
        "bakery donates bread every evening",
        "comet visible before dawn this week",
    ];

    /// A post `minute` minutes into the stream, by an account that declares automation or not,
    /// telling story `story`.
    fn post(id: &str, minute: i64, author: &str, automated: bool, story: usize, extra: &str) -> Post {
        let at = DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap().to_rfc3339();
        let json = format!(
            r#"{{"id":"{id}","platform":"{}","author":{{"id":"{author}","handle":"h","declared_automated":{automated}}},"created_at":"{at}","text":"{}"{extra}}}"#,
            id.split(':').next().unwrap(),
            STORIES[story]
        );
        Post::from_json_at(json.as_bytes(), DateTime::from_timestamp(4_000_000_000, 0).unwrap()).unwrap()
    }

    /// A rules file of one critical rule: `settings` (lines such as `keep_firing_secs = 0`) and
    /// its `when` conditions, one per line.
    fn critical_rule(name: &str, settings: &str, when: &str) -> String {
        format!(
            "[[rule]]\nname = \"{name}\"\nseverity = \"critical\"\nsummary = \"s\"\n{settings}\n[rule.when]\n{when}\n"
        )
    }

    fn scorer(rules: &str, config: ScoreConfig) -> Scorer {
        Scorer::new(RuleSet::from_toml(rules).unwrap(), &config)
    }

    fn observe(detector: &mut Detector, scorer: &mut Scorer, post: Post) -> Vec<AlertEvent> {
        let signals = PostSignals::of(&post);
        let detection = detector.process(post).unwrap();
        scorer.observe(&detection, &signals)
    }

    #[test]
    fn past_the_hourly_limit_alerts_are_held_and_one_flood_page_stands_for_them() {
        let rules = critical_rule("copied", "", "size = \">= 2\"");
        let mut scorer = scorer(&rules, ScoreConfig { max_pages_per_hour: 2, ..ScoreConfig::default() });
        let mut detector = Detector::new(DetectorConfig::default());
        let mut starts = Vec::new();
        for k in 0..5 {
            observe(&mut detector, &mut scorer, post(&format!("x:{k}"), k * 2, "a", false, k as usize, ""));
            let reference = format!(r#","repost_of":"x:{k}""#);
            let repost = post(&format!("bluesky:{k}"), k * 2 + 1, "b", false, k as usize, &reference);
            starts.extend(observe(&mut detector, &mut scorer, repost));
        }
        let summary: Vec<(&str, bool, AlertState)> =
            starts.iter().map(|e| (e.rule.as_str(), e.held, e.state)).collect();
        assert_eq!(
            summary,
            [
                ("copied", false, AlertState::Firing),
                ("copied", false, AlertState::Firing),
                ("copied", true, AlertState::Firing),
                (FLOOD_RULE, false, AlertState::Firing),
                ("copied", true, AlertState::Firing),
                ("copied", true, AlertState::Firing),
            ]
        );
        assert_eq!(starts[3].evidence["held_alerts"], 1.0);
        assert_eq!(starts[3].alert_id, alert_id("copied", FLOOD_RULE));
        // An hour without a held alert resolves the flood page, which then counts all three.
        let later = observe(&mut detector, &mut scorer, post("x:quiet", 9 + 61, "c", false, 5, ""));
        let flood: Vec<&AlertEvent> = later.iter().filter(|e| e.rule == FLOOD_RULE).collect();
        assert_eq!(flood.len(), 1, "{later:?}");
        assert_eq!((flood[0].state, flood[0].evidence["held_alerts"]), (AlertState::Resolved, 3.0));
        assert_eq!(flood[0].started_at, starts[3].started_at);
    }

    #[test]
    fn the_scorer_keeps_at_most_its_bound_of_cascades_and_never_forgets_an_open_alert() {
        let rules = critical_rule("copied", "", "size = \">= 3\"");
        let mut scorer = scorer(&rules, ScoreConfig { max_cascades: 10, ..ScoreConfig::default() });
        let mut detector = Detector::new(DetectorConfig::default());
        observe(&mut detector, &mut scorer, post("x:0", 0, "a", false, 0, ""));
        observe(&mut detector, &mut scorer, post("bluesky:0", 0, "b", false, 0, r#","repost_of":"x:0""#));
        let fired = observe(&mut detector, &mut scorer, post("bluesky:1", 0, "c", false, 0, r#","repost_of":"x:0""#));
        assert_eq!(fired.len(), 1);
        let alerting = fired[0].cascade_id.clone();
        for k in 0..100 {
            // Texts that share nothing: a cascade each.
            let words: Vec<String> = (0..8).map(|w| format!("w{}", k * 8 + w)).collect();
            let at = DateTime::from_timestamp(1_800_000_060 + k * 6, 0).unwrap().to_rfc3339();
            let json = format!(
                r#"{{"id":"y:{k}","platform":"y","author":{{"id":"d","handle":"h"}},"created_at":"{at}","text":"{}"}}"#,
                words.join(" ")
            );
            let arrival = DateTime::from_timestamp(4_000_000_000, 0).unwrap();
            observe(&mut detector, &mut scorer, Post::from_json_at(json.as_bytes(), arrival).unwrap());
            assert!(scorer.tracked_cascades() <= 10, "{} cascades kept", scorer.tracked_cascades());
        }
        assert_eq!(scorer.forgotten_early(), 101 - scorer.tracked_cascades() as u64);
        assert!(scorer.features(&alerting).is_some(), "the cascade with an open alert is kept");
        assert_eq!(scorer.firing().len(), 1);
    }

    #[test]
    fn cascades_idle_for_the_history_are_forgotten_unless_an_alert_is_open() {
        let rules = critical_rule("copied", "keep_firing_secs = 100000", "size = \">= 2\"\nplatforms = \">= 2\"");
        let mut scorer = scorer(&rules, ScoreConfig::default());
        let mut detector = Detector::new(DetectorConfig::default());
        observe(&mut detector, &mut scorer, post("x:0", 0, "a", false, 0, ""));
        observe(&mut detector, &mut scorer, post("bluesky:0", 1, "b", false, 0, r#","repost_of":"x:0""#));
        for k in 0..5 {
            observe(&mut detector, &mut scorer, post(&format!("y:{k}"), 2 + k, "c", false, 1 + k as usize, ""));
        }
        // Still within the hour: a post keeps y:4's cascade busy; the others stay too.
        observe(&mut detector, &mut scorer, post("y:5", 50, "c", false, 5, r#","reply_to":"y:4""#));
        assert_eq!(scorer.tracked_cascades(), 6);
        // An hour and more after their last posts, only the busy one and the open alert's are kept.
        observe(&mut detector, &mut scorer, post("y:6", 70, "d", false, 5, r#","reply_to":"y:5""#));
        assert_eq!(scorer.tracked_cascades(), 2, "the alerting cascade and y:4's");
        assert_eq!(scorer.firing().len(), 1);
        assert_eq!(scorer.forgotten_early(), 0, "forgotten for their idleness, not early");
    }

    #[test]
    fn growth_updates_in_the_second_an_alert_starts_are_not_starts() {
        let rules = critical_rule("copied", "", "size = \">= 2\"");
        let mut scorer = scorer(&rules, ScoreConfig::default());
        let mut detector = Detector::new(DetectorConfig::default());
        let mut firing = Vec::new();
        observe(&mut detector, &mut scorer, post("x:0", 0, "a", false, 0, ""));
        for k in 0..64 {
            // Every repost in the same minute, so the updates share the start's event time.
            let repost = post(&format!("bluesky:{k}"), 0, "b", false, 0, r#","repost_of":"x:0""#);
            firing.extend(observe(&mut detector, &mut scorer, repost));
        }
        assert!(firing.len() > 3, "the cascade's growth was reported: {}", firing.len());
        assert!(firing.iter().all(|e| e.state == AlertState::Firing && e.event_time == e.started_at));
        let starts: Vec<bool> = firing.iter().map(|e| e.starts).collect();
        assert_eq!(starts.iter().filter(|s| **s).count(), 1, "{starts:?}");
        assert!(starts[0]);
    }

    #[test]
    fn a_post_dated_a_day_ahead_of_its_arrival_resolves_nothing() {
        // A rule on the window's rate, which resolves once event time moves past the burst.
        let rules = critical_rule("burst", "keep_firing_secs = 0", "posts_per_minute = \">= 0.3\"");
        let mut resolved_with_and_without_arrival = Vec::new();
        for with_arrival in [true, false] {
            let mut scorer = scorer(&rules, ScoreConfig::default());
            // No lead: event time stays at the arrival, where the burst still holds.
            let mut detector =
                Detector::new(DetectorConfig { max_event_time_lead_secs: 0, ..DetectorConfig::default() });
            let mut observe_arrived = |post: Post, arrived_minute: i64| {
                let signals = PostSignals::of(&post);
                let arrived = DateTime::from_timestamp(1_800_000_000 + arrived_minute * 60, 0);
                let prepared = detector.preparer().prepare(post);
                let detection = detector.process_prepared(prepared, None, arrived.filter(|_| with_arrival)).unwrap();
                scorer.observe(&detection, &signals)
            };
            observe_arrived(post("x:0", 0, "a", false, 0, ""), 0);
            let fired = observe_arrived(post("bluesky:0", 1, "b", false, 0, r#","repost_of":"x:0""#), 1);
            assert_eq!(fired[0].state, AlertState::Firing);
            let ahead = observe_arrived(post("x:ahead", 2 + 24 * 60, "c", false, 1, ""), 2);
            resolved_with_and_without_arrival.push(ahead.iter().any(|e| e.state == AlertState::Resolved));
        }
        assert_eq!(resolved_with_and_without_arrival, [false, true], "only its arrival keeps the clock in place");
    }

    #[test]
    fn a_campaign_slower_than_the_window_still_adds_up() {
        let when = "automated_authors = \">= 3\"\nautomated_author_share = \">= 0.5\"\nplatforms = \">= 3\"";
        let mut scorer = scorer(&critical_rule("slow", "", when), ScoreConfig::default());
        let mut detector = Detector::new(DetectorConfig::default());
        let mut fired = Vec::new();
        // One post every twelve minutes, more than twice the five-minute window apart.
        let platforms = ["x", "bluesky", "mastodon", "threads", "reddit"];
        for (i, platform) in platforms.iter().enumerate() {
            let reference = if i == 0 { String::new() } else { r#","repost_of":"x:0""#.to_owned() };
            let post = post(&format!("{platform}:{i}"), 12 * i as i64, &format!("bot{i}"), i % 2 == 0, 0, &reference);
            fired.extend(observe(&mut detector, &mut scorer, post).into_iter().map(|e| (i, e)));
        }
        let (at, event) = &fired[0];
        assert_eq!(*at, 4, "the third automated account, on the fifth post: {fired:?}");
        assert_eq!((event.features.automated_authors, event.features.distinct_authors), (3, 5));
        assert!((event.features.minutes_active - 48.0).abs() < 1e-9);
        assert!(event.features.posts_per_minute < 0.5, "the five-minute window alone sees one post");
    }
}
