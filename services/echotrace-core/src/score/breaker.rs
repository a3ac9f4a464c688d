//! The circuit breaker on paging: at most so many alerts of one rule start paging in any hour of
//! event time. Past that, a new alert of the rule is *held*: stored and counted like any other,
//! never sent to Alertmanager, and one `alert_flood` page says how many are being held, so that a
//! flood of copies (a hundred cascades of one meme, a mass-posting bot farm) never floods on-call.
//!
//! The limit is `alerting.max_pages_per_hour` for every critical rule, or a rule's own
//! `max_per_hour` (which also caps a ticket or info rule). The flood page resolves once an hour of
//! event time has passed without a held alert. Event time, like the rest of the scorer, so a
//! replay holds exactly the alerts the live run held.

use super::owner::CascadeInfo;
use super::rules::Rule;
use crate::detector::graph::CascadeId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// The name the flood page goes by (a rules file cannot use it).
pub const FLOOD_RULE: &str = "alert_flood";

/// The span the limit counts over.
const HOUR: Duration = Duration::hours(1);

/// What the breaker decided for an alert that starts firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It pages (or tickets) as usual.
    Sent,
    /// It is held; `flood_starts` when it is the first held alert of its rule since the last flood
    /// page resolved.
    Held {
        /// A new flood page opens with it.
        flood_starts: bool,
    },
}

/// An open flood page of one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flood {
    /// The cascade of the first held alert, which the page names (its labels stay the same until
    /// it resolves).
    pub cascade_id: CascadeId,
    /// That cascade's root post and platforms, as the held alert named them.
    pub names: CascadeInfo,
    /// When the first held alert started.
    pub started_at: DateTime<Utc>,
    /// Alerts held since.
    pub held: u32,
    /// When the latest held alert started.
    pub last_held_at: DateTime<Utc>,
    /// The rule's limit.
    pub limit: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RuleBudget {
    /// Start times of the alerts sent in the last hour.
    sent: VecDeque<DateTime<Utc>>,
    flood: Option<Flood>,
}

/// Per rule, the alerts sent in the last hour and the open flood page.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PageBreaker {
    max_pages_per_hour: u32,
    budgets: HashMap<String, RuleBudget>,
}

impl PageBreaker {
    /// A breaker that lets `max_pages_per_hour` alerts of each critical rule page per hour (0: no
    /// limit, unless a rule sets its own).
    pub fn new(max_pages_per_hour: u32) -> PageBreaker {
        PageBreaker { max_pages_per_hour, budgets: HashMap::new() }
    }

    /// The limit of critical rules without their own.
    pub fn max_pages_per_hour(&self) -> u32 {
        self.max_pages_per_hour
    }

    /// Takes a new limit (a restart with another configuration).
    pub fn set_max_pages_per_hour(&mut self, max_pages_per_hour: u32) {
        self.max_pages_per_hour = max_pages_per_hour;
    }

    /// The limit of `rule`, if it has one.
    fn limit(&self, rule: &Rule) -> Option<u32> {
        rule.max_per_hour
            .or((rule.severity == "critical" && self.max_pages_per_hour > 0).then_some(self.max_pages_per_hour))
    }

    /// Decides for an alert of `rule` on `cascade_id` (named by `names`) that starts firing at
    /// `at`. A shadow rule's alerts never page, so they are never held.
    pub fn admit(&mut self, rule: &Rule, cascade_id: CascadeId, names: &CascadeInfo, at: DateTime<Utc>) -> Admission {
        let Some(limit) = self.limit(rule).filter(|_| !rule.shadow) else { return Admission::Sent };
        let budget = self.budgets.entry(rule.name.clone()).or_default();
        while budget.sent.front().is_some_and(|sent| at - *sent >= HOUR) {
            budget.sent.pop_front();
        }
        if (budget.sent.len() as u32) < limit && budget.flood.is_none() {
            budget.sent.push_back(at);
            return Admission::Sent;
        }
        match &mut budget.flood {
            Some(flood) => {
                flood.held += 1;
                flood.last_held_at = at;
                Admission::Held { flood_starts: false }
            }
            None => {
                budget.flood =
                    Some(Flood { cascade_id, names: names.clone(), started_at: at, held: 1, last_held_at: at, limit });
                Admission::Held { flood_starts: true }
            }
        }
    }

    /// The open flood page of `rule`, if any.
    pub fn flood(&self, rule: &str) -> Option<&Flood> {
        self.budgets.get(rule)?.flood.as_ref()
    }

    /// Closes the flood pages that have held nothing for an hour at `now`; returns them by rule.
    pub fn resolve_quiet(&mut self, now: DateTime<Utc>) -> Vec<(String, Flood)> {
        let mut resolved = Vec::new();
        for (rule, budget) in &mut self.budgets {
            if budget.flood.as_ref().is_some_and(|flood| now - flood.last_held_at >= HOUR) {
                resolved.push((rule.clone(), budget.flood.take().expect("checked")));
            }
        }
        resolved.sort_by(|a, b| a.0.cmp(&b.0));
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::rules::RuleSet;

    fn rules() -> RuleSet {
        RuleSet::from_toml(
            "[[rule]]\nname = \"page\"\nseverity = \"critical\"\nsummary = \"s\"\n[rule.when]\nsize = \">= 1\"\n\
             [[rule]]\nname = \"ticket\"\nseverity = \"warning\"\nsummary = \"s\"\nmax_per_hour = 1\n\
             [rule.when]\nsize = \">= 1\"\n\
             [[rule]]\nname = \"info\"\nseverity = \"info\"\nsummary = \"s\"\n[rule.when]\nsize = \">= 1\"\n",
        )
        .unwrap()
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).unwrap()
    }

    /// The cascade every test alert is about.
    fn cascade() -> (CascadeId, CascadeInfo) {
        let names = CascadeInfo { root_post_id: "x:1".into(), platforms: vec!["x".into()] };
        (CascadeId::parse("c00000000000000c1").expect("a printed id"), names)
    }

    #[test]
    fn past_the_limit_alerts_are_held_and_one_flood_page_opens() {
        let (id, names) = cascade();
        let rules = rules();
        let mut breaker = PageBreaker::new(3);
        let page = &rules.rules[0];
        for minute in 0..3 {
            assert_eq!(breaker.admit(page, id, &names, at(minute)), Admission::Sent);
        }
        assert_eq!(breaker.admit(page, id, &names, at(3)), Admission::Held { flood_starts: true });
        assert_eq!(breaker.admit(page, id, &names, at(4)), Admission::Held { flood_starts: false });
        assert_eq!(breaker.flood("page").map(|f| f.held), Some(2));
        // Still held after the first sends leave the hour: the flood lasts until an hour is quiet.
        assert_eq!(breaker.admit(page, id, &names, at(70)), Admission::Held { flood_starts: false });
        assert!(breaker.resolve_quiet(at(129)).is_empty());
        let resolved = breaker.resolve_quiet(at(130));
        assert_eq!(resolved.len(), 1);
        assert_eq!((resolved[0].0.as_str(), resolved[0].1.held), ("page", 3));
        assert_eq!(breaker.admit(page, id, &names, at(131)), Admission::Sent, "a quiet hour resets the breaker");
    }

    #[test]
    fn the_default_limit_is_for_pages_and_a_rule_may_set_its_own() {
        let (id, names) = cascade();
        let rules = rules();
        let mut breaker = PageBreaker::new(1);
        let (ticket, info) = (&rules.rules[1], &rules.rules[2]);
        assert_eq!(breaker.admit(ticket, id, &names, at(0)), Admission::Sent);
        assert_eq!(
            breaker.admit(ticket, id, &names, at(1)),
            Admission::Held { flood_starts: true },
            "its own limit of 1"
        );
        for minute in 0..10 {
            assert_eq!(
                breaker.admit(info, id, &names, at(minute)),
                Admission::Sent,
                "info has no limit unless it sets one"
            );
        }
        let mut unlimited = PageBreaker::new(0);
        for minute in 0..10 {
            assert_eq!(unlimited.admit(&rules.rules[0], id, &names, at(minute)), Admission::Sent);
        }
    }
}
