//! Alert rules: conditions over [`CascadeFeatures`], a severity, and a `for` duration.
//!
//! Rules live in a TOML file (the shipped defaults are `deploy/rules.toml`, which explains each one):
//!
//! ```toml
//! [[rule]]
//! name = "amplification_campaign"
//! severity = "critical"
//! for_secs = 60
//! summary = "Content is being amplified across platforms by fresh or automated accounts"
//! [rule.when]
//! posts_per_minute = ">= 2"
//! platforms = ">= 3"
//! ```
//!
//! Every condition of a rule must hold. Features are named as in [`CascadeFeatures`]. A rule with
//! `shadow = true` runs on trial: its alerts are stored and counted, marked as shadow, and never
//! page.

use super::features::CascadeFeatures;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A set of rules, as loaded from TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The rules, evaluated in order.
    #[serde(rename = "rule")]
    pub rules: Vec<Rule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable name; the Alertmanager `alertname`.
    pub name: String,
    /// `critical`, `warning` or `info`: Alertmanager routes on it.
    pub severity: String,
    /// How long (event time) the conditions must hold before the alert fires.
    #[serde(default)]
    pub for_secs: u64,
    /// How long (event time) the conditions must fail before a firing alert resolves.
    #[serde(default = "default_keep_firing")]
    pub keep_firing_secs: u64,
    /// One line for the page.
    pub summary: String,
    /// A rule on trial: its alerts are evaluated, stored and counted like any other, marked
    /// `shadow`, and never sent to Alertmanager (`deploy/RUNBOOK.md`, "Trying a rule in shadow").
    #[serde(default)]
    pub shadow: bool,
    /// At most this many of its alerts start paging per hour of event time; the rest are held and
    /// summarised in one `alert_flood` page ([`super::breaker`]). Unset: `alerting.max_pages_per_hour`
    /// for a critical rule, no limit for the others.
    #[serde(default)]
    pub max_per_hour: Option<u32>,
    /// Feature name → condition such as `">= 3"`.
    pub when: BTreeMap<String, String>,
}

fn default_keep_firing() -> u64 {
    120
}

/// Why a rule set is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// The TOML does not parse or has unknown keys.
    #[error("rules file: {0}")]
    Syntax(String),
    /// A condition names no feature.
    #[error("rule `{rule}`: unknown feature `{feature}` (known: {known})")]
    UnknownFeature {
        /// The rule.
        rule: String,
        /// The feature it names.
        feature: String,
        /// The features there are.
        known: String,
    },
    /// A condition is not `OP NUMBER`.
    #[error("rule `{rule}`: condition `{condition}` on `{feature}` is not like `>= 3` (operators: >=, >, <=, <, ==)")]
    BadCondition {
        /// The rule.
        rule: String,
        /// The feature.
        feature: String,
        /// The text.
        condition: String,
    },
    /// A rule takes a name the scorer uses for its own alerts.
    #[error("rule `{0}`: the name is reserved for the page that summarises held alerts")]
    ReservedName(String),
    /// Severity outside the routed set.
    #[error("rule `{rule}`: severity `{severity}` is not one of critical, warning, info")]
    BadSeverity {
        /// The rule.
        rule: String,
        /// The severity given.
        severity: String,
    },
}

/// The features a condition may name.
pub const FEATURES: [&str; 17] = [
    "size",
    "posts_per_minute",
    "acceleration",
    "depth",
    "summary_depth",
    "automated_summary_depth",
    "platforms",
    "distinct_authors",
    "author_concentration",
    "automated_share",
    "coordination",
    "automated_coordination",
    "automated_authors",
    "automated_author_share",
    "fresh_authors",
    "minutes_active",
    "platforms_last_hour",
];

fn feature_value(features: &CascadeFeatures, name: &str) -> f64 {
    match name {
        "size" => features.size as f64,
        "posts_per_minute" => features.posts_per_minute,
        "acceleration" => features.acceleration,
        "depth" => f64::from(features.depth),
        "summary_depth" => f64::from(features.summary_depth),
        "automated_summary_depth" => f64::from(features.automated_summary_depth),
        "platforms" => f64::from(features.platforms),
        "distinct_authors" => f64::from(features.distinct_authors),
        "author_concentration" => features.author_concentration,
        "automated_share" => features.automated_share,
        "coordination" => f64::from(features.coordination),
        "automated_coordination" => f64::from(features.automated_coordination),
        "automated_authors" => f64::from(features.automated_authors),
        "automated_author_share" => features.automated_author_share,
        "fresh_authors" => f64::from(features.fresh_authors),
        "minutes_active" => features.minutes_active,
        "platforms_last_hour" => f64::from(features.platforms_last_hour),
        _ => unreachable!("conditions are validated when the rules load"),
    }
}

fn parse_condition(text: &str) -> Option<(&str, f64)> {
    let text = text.trim();
    let op = [">=", "<=", "==", ">", "<"].into_iter().find(|op| text.starts_with(op))?;
    Some((op, text[op.len()..].trim().parse().ok()?))
}

impl RuleSet {
    /// Parses and validates a rules file.
    pub fn from_toml(text: &str) -> Result<RuleSet, RuleError> {
        let set: RuleSet = toml_from_str(text)?;
        for rule in &set.rules {
            if rule.name == super::breaker::FLOOD_RULE {
                return Err(RuleError::ReservedName(rule.name.clone()));
            }
            if !["critical", "warning", "info"].contains(&rule.severity.as_str()) {
                return Err(RuleError::BadSeverity { rule: rule.name.clone(), severity: rule.severity.clone() });
            }
            for (feature, condition) in &rule.when {
                if !FEATURES.contains(&feature.as_str()) {
                    return Err(RuleError::UnknownFeature {
                        rule: rule.name.clone(),
                        feature: feature.clone(),
                        known: FEATURES.join(", "),
                    });
                }
                if parse_condition(condition).is_none() {
                    return Err(RuleError::BadCondition {
                        rule: rule.name.clone(),
                        feature: feature.clone(),
                        condition: condition.clone(),
                    });
                }
            }
        }
        Ok(set)
    }
}

fn toml_from_str(text: &str) -> Result<RuleSet, RuleError> {
    toml::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))
}

impl Rule {
    /// Whether every condition holds for these features.
    pub fn holds(&self, features: &CascadeFeatures) -> bool {
        self.when.iter().all(|(feature, condition)| {
            let (op, threshold) = parse_condition(condition).expect("validated on load");
            let value = feature_value(features, feature);
            match op {
                ">=" => value >= threshold,
                ">" => value > threshold,
                "<=" => value <= threshold,
                "<" => value < threshold,
                _ => value == threshold,
            }
        })
    }

    /// The features this rule reads, with their values, for the alert's annotations.
    pub fn evidence(&self, features: &CascadeFeatures) -> BTreeMap<String, f64> {
        self.when.keys().map(|f| (f.clone(), feature_value(features, f))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validates_and_evaluates() {
        let set = RuleSet::from_toml(
            "[[rule]]\nname='r'\nseverity='warning'\nfor_secs=30\nsummary='s'\n[rule.when]\nplatforms='>= 2'\nautomated_share='> 0.5'\n",
        )
        .unwrap();
        let rule = &set.rules[0];
        assert_eq!(rule.keep_firing_secs, 120);
        assert!(!rule.shadow, "rules page unless marked otherwise");
        let mut features = CascadeFeatures { platforms: 2, automated_share: 0.6, ..CascadeFeatures::default() };
        assert!(rule.holds(&features));
        features.automated_share = 0.5;
        assert!(!rule.holds(&features));
        assert_eq!(rule.evidence(&features)["platforms"], 2.0);
    }

    #[test]
    fn rejects_unknown_features_bad_conditions_and_severities() {
        let base = "[[rule]]\nname='r'\nseverity='warning'\nsummary='s'\n[rule.when]\n";
        assert!(matches!(RuleSet::from_toml(&format!("{base}likes='> 1'")), Err(RuleError::UnknownFeature { .. })));
        assert!(matches!(RuleSet::from_toml(&format!("{base}size='about 3'")), Err(RuleError::BadCondition { .. })));
        let loud = base.replace("warning", "loud");
        assert!(matches!(RuleSet::from_toml(&format!("{loud}size='> 1'")), Err(RuleError::BadSeverity { .. })));
        assert!(matches!(RuleSet::from_toml("rule = 3"), Err(RuleError::Syntax(_))));
    }
}
