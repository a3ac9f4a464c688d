//! `echotrace backtest`: a candidate rules file against the configured one, on the same history.
//!
//! The detector links the input once; every detection goes to one [`Scorer`] per rule set, so both
//! sides score exactly the same cascades at the same event times, and the comparison is exact: an
//! alert added or removed is the rule change's doing, never the run's. Everything runs on event
//! time, so the same input gives the same report on every run.
//!
//! The input is a JSONL stream ([`input::feed_jsonl`], embedded as `replay` does) or the stored
//! datasets of a past run ([`input::feed_stored`], with the embeddings it stored). A labels file
//! names the posts of known campaigns; the report then gives, per rule set, the time from each
//! campaign's first post to its first page and first ticket, and counts pages elsewhere as false.

pub mod input;
pub mod report;

use chrono::{DateTime, Utc};
use echotrace_core::detector::{Detector, DetectorConfig};
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::prepare::PreparedPost;
use echotrace_core::score::alerts::{AlertEvent, ScoreConfig, Scorer};
use echotrace_core::score::features::{CascadeFeatures, PostSignals};
use echotrace_core::score::rules::RuleSet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// The severity that pages on-call; `warning` opens a ticket.
pub const PAGE: &str = "critical";
/// The severity that opens a ticket.
pub const TICKET: &str = "warning";

/// An alert that started firing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AlertStart {
    /// The rule's name.
    pub rule: String,
    /// The alert's id (cascade and rule).
    pub alert_id: String,
    /// The cascade, as it was when the alert started.
    pub cascade_id: String,
    /// Event time at which it started.
    pub started_at: DateTime<Utc>,
    /// The rule's severity.
    pub severity: String,
    /// Raised by a shadow rule: would not have paged.
    pub shadow: bool,
    /// Held by the circuit breaker: would not have paged (the `alert_flood` page did).
    pub held: bool,
}

impl AlertStart {
    fn of(event: &AlertEvent) -> Option<AlertStart> {
        event.starts.then(|| AlertStart {
            rule: event.rule.clone(),
            alert_id: event.alert_id.clone(),
            cascade_id: event.cascade_id.clone(),
            started_at: event.started_at,
            severity: event.severity.clone(),
            shadow: event.shadow,
            held: event.held,
        })
    }

    /// Whether on-call would have been paged.
    pub fn pages(&self) -> bool {
        self.severity == PAGE && !self.shadow && !self.held
    }

    /// Whether a ticket would have been opened.
    pub fn tickets(&self) -> bool {
        self.severity == TICKET && !self.shadow && !self.held
    }

    /// Whether it would have paged but the circuit breaker held it.
    pub fn held_page(&self) -> bool {
        self.severity == PAGE && !self.shadow && self.held
    }
}

/// Labelled campaigns: post id → campaign name.
#[derive(Debug, Clone, Default)]
pub struct Labels(pub HashMap<String, String>);

impl Labels {
    /// Reads a labels file: one `post_id`, campaign pair per line, separated by a tab or a comma;
    /// a first line `post_id…` is a header.
    pub fn read(path: &Path) -> anyhow::Result<Labels> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels {}", path.display()))?;
        let mut labels = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (number == 0 && line.starts_with("post_id")) {
                continue;
            }
            let (post, campaign) = line.split_once(['\t', ',']).with_context(|| {
                format!("{}:{}: expected `post_id<TAB>campaign`, got `{line}`", path.display(), number + 1)
            })?;
            labels.insert(post.trim().to_owned(), campaign.trim().to_owned());
        }
        Ok(Labels(labels))
    }
}

/// One rule set scoring the shared detections.
struct Side {
    scorer: Scorer,
    starts: Vec<AlertStart>,
}

/// A labelled campaign as the detector saw it.
#[derive(Debug, Clone, Default)]
struct CampaignTrace {
    first_post_at: Option<DateTime<Utc>>,
    posts: u64,
    cascades: BTreeSet<String>,
}

/// The detector and one scorer per rule set, fed the same posts.
pub struct Backtest {
    detector: Detector,
    sides: Vec<Side>,
    labels: Labels,
    campaigns: BTreeMap<String, CampaignTrace>,
    /// Absorbed cascade → the cascade it merged into.
    merged_into: HashMap<String, String>,
    posts: u64,
}

impl Backtest {
    /// A backtest of `rule_sets` (the configured rules first) over one detector.
    pub fn new(detector: DetectorConfig, rule_sets: Vec<RuleSet>, score: &ScoreConfig, labels: Labels) -> Backtest {
        Backtest {
            detector: Detector::new(detector),
            sides: rule_sets
                .into_iter()
                .map(|rules| Side { scorer: Scorer::new(rules, score), starts: Vec::new() })
                .collect(),
            labels,
            campaigns: BTreeMap::new(),
            merged_into: HashMap::new(),
            posts: 0,
        }
    }

    /// The detector, to ask which posts need an embedding ([`Detector::embedding_key`]).
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Links one prepared post ([`Detector::preparer`]) and scores it with every rule set; returns the cascade it joined (none for a
    /// duplicate).
    pub fn observe(&mut self, prepared: PreparedPost, embedding: Option<&TextEmbedding>) -> Option<String> {
        let signals = PostSignals::of(&prepared.post);
        let campaign = self.labels.0.get(&prepared.post.id).cloned();
        let detection = self.detector.process_prepared(prepared, embedding, None)?;
        self.posts += 1;
        for merge in &detection.merges {
            self.merged_into.insert(merge.absorbed_cascade_id.clone(), merge.into_cascade_id.clone());
        }
        if let Some(campaign) = campaign {
            let trace = self.campaigns.entry(campaign).or_default();
            let at = detection.post.created_at;
            trace.first_post_at = Some(trace.first_post_at.map_or(at, |first| first.min(at)));
            trace.posts += 1;
            trace.cascades.insert(detection.cascade.cascade_id.clone());
        }
        for side in &mut self.sides {
            let events = side.scorer.observe(&detection, &signals);
            side.starts.extend(events.iter().filter_map(AlertStart::of));
        }
        Some(detection.cascade.cascade_id)
    }

    /// The features the rule set at `side` sees for a cascade now, for tracing a rule's inputs.
    pub fn features(&mut self, side: usize, cascade_id: &str) -> Option<CascadeFeatures> {
        self.sides.get_mut(side)?.scorer.features(cascade_id)
    }

    /// The cascade `cascade_id` has ended up in so far, through every merge.
    pub fn final_cascade<'a>(&'a self, mut cascade_id: &'a str) -> &'a str {
        while let Some(into) = self.merged_into.get(cascade_id) {
            cascade_id = into;
        }
        cascade_id
    }

    /// The report, with the rule sets named as given (the configured one first).
    pub fn finish(self, names: &[&str]) -> report::Report {
        let campaign_cascades: BTreeMap<&str, BTreeSet<&str>> = self
            .campaigns
            .iter()
            .map(|(name, trace)| (name.as_str(), trace.cascades.iter().map(|c| self.final_cascade(c)).collect()))
            .collect();
        let in_campaign = |start: &AlertStart| -> Option<&str> {
            let cascade = self.final_cascade(&start.cascade_id);
            campaign_cascades.iter().find(|(_, cascades)| cascades.contains(cascade)).map(|(name, _)| *name)
        };
        let labelled_posts: u64 = self.campaigns.values().map(|trace| trace.posts).sum();
        let background_posts = self.posts - labelled_posts;
        let per_million = |count: usize| count as f64 * 1e6 / background_posts.max(1) as f64;
        let sides: Vec<report::SideSummary> = self
            .sides
            .iter()
            .zip(names)
            .map(|(side, name)| {
                let false_starts: Vec<&AlertStart> = side.starts.iter().filter(|s| in_campaign(s).is_none()).collect();
                let campaigns = self
                    .campaigns
                    .iter()
                    .map(|(campaign, trace)| {
                        let first = |wanted: fn(&AlertStart) -> bool| {
                            side.starts
                                .iter()
                                .filter(|s| wanted(s) && in_campaign(s) == Some(campaign.as_str()))
                                .map(|s| s.started_at)
                                .min()
                        };
                        let after = |at: Option<DateTime<Utc>>| {
                            at.zip(trace.first_post_at)
                                .map(|(at, first)| (at - first).num_milliseconds() as f64 / 1000.0)
                        };
                        report::CampaignTiming {
                            campaign: campaign.clone(),
                            posts: trace.posts,
                            first_page_after_secs: after(first(AlertStart::pages)),
                            first_ticket_after_secs: after(first(AlertStart::tickets)),
                            first_held_page_after_secs: after(first(AlertStart::held_page)),
                        }
                    })
                    .collect();
                report::SideSummary {
                    rules: name.to_string(),
                    pages: side.starts.iter().filter(|s| s.pages()).count(),
                    tickets: side.starts.iter().filter(|s| s.tickets()).count(),
                    false_pages_per_million: per_million(false_starts.iter().filter(|s| s.pages()).count()),
                    false_tickets_per_million: per_million(false_starts.iter().filter(|s| s.tickets()).count()),
                    campaigns,
                }
            })
            .collect();
        let rules = report::compare_rules(self.sides.iter().map(|side| side.starts.as_slice()).collect());
        report::Report { posts: self.posts, background_posts, sides, rules }
    }
}
