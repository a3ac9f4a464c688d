//! What `echotrace backtest` prints: per rule set, pages and tickets and the campaigns' timing;
//! per rule, the alerts each side fired and those the candidate adds or removes, each with the SQL
//! that shows its cascade. As a table for people, or as JSON for CI.

use super::AlertStart;
use crate::alerting::alert_sql;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Posts linked (duplicates left out).
    pub posts: u64,
    /// Of those, the posts not labelled as a campaign's.
    pub background_posts: u64,
    /// One summary per rule set, the configured one first.
    pub sides: Vec<SideSummary>,
    /// Per rule name, what each side fired.
    pub rules: Vec<RuleComparison>,
}

/// One rule set over the whole input.
#[derive(Debug, Clone, Serialize)]
pub struct SideSummary {
    /// Which rules: `configured` or the candidate file.
    pub rules: String,
    /// Alerts that would have paged (critical, not shadow).
    pub pages: usize,
    /// Alerts that would have opened a ticket (warning, not shadow).
    pub tickets: usize,
    /// Pages on cascades that hold no labelled post, per million unlabelled posts.
    pub false_pages_per_million: f64,
    /// Tickets on cascades that hold no labelled post, per million unlabelled posts.
    pub false_tickets_per_million: f64,
    /// The labelled campaigns.
    pub campaigns: Vec<CampaignTiming>,
}

/// How soon a labelled campaign was paged and ticketed.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignTiming {
    /// The label.
    pub campaign: String,
    /// Its posts in the input.
    pub posts: u64,
    /// Seconds of event time from its first post to its first page; none if it never paged.
    pub first_page_after_secs: Option<f64>,
    /// The same for its first ticket.
    pub first_ticket_after_secs: Option<f64>,
    /// The same for its first page that the circuit breaker held (its rule had paged its hourly
    /// limit on other cascades).
    pub first_held_page_after_secs: Option<f64>,
}

/// One rule's alerts on each side.
#[derive(Debug, Clone, Serialize)]
pub struct RuleComparison {
    /// The rule's name.
    pub rule: String,
    /// Alerts started, per side in order.
    pub fired: Vec<usize>,
    /// Started by the candidate and not by the configured rules.
    pub added: Vec<ChangedAlert>,
    /// Started by the configured rules and not by the candidate.
    pub removed: Vec<ChangedAlert>,
}

/// An alert only one side raised.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedAlert {
    /// Its id.
    pub alert_id: String,
    /// Its cascade.
    pub cascade_id: String,
    /// When it started (event time).
    pub started_at: String,
    /// The SQL that returns the cascade's posts.
    pub sql: String,
}

/// Per rule name, the alerts of the first side against those of the second (with one side, only
/// what it fired).
pub fn compare_rules(sides: Vec<&[AlertStart]>) -> Vec<RuleComparison> {
    let names: BTreeSet<&str> = sides.iter().flat_map(|starts| starts.iter().map(|s| s.rule.as_str())).collect();
    names
        .into_iter()
        .map(|rule| {
            let of_rule: Vec<BTreeMap<(&str, i64), &AlertStart>> = sides
                .iter()
                .map(|starts| {
                    starts
                        .iter()
                        .filter(|s| s.rule == rule)
                        .map(|s| ((s.alert_id.as_str(), s.started_at.timestamp_millis()), s))
                        .collect()
                })
                .collect();
            let only = |a: usize, b: usize| -> Vec<ChangedAlert> {
                match (of_rule.get(a), of_rule.get(b)) {
                    (Some(mine), Some(theirs)) => mine
                        .iter()
                        .filter(|(key, _)| !theirs.contains_key(key))
                        .map(|(_, start)| ChangedAlert {
                            alert_id: start.alert_id.clone(),
                            cascade_id: start.cascade_id.clone(),
                            started_at: start.started_at.to_rfc3339(),
                            sql: alert_sql(&start.cascade_id),
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            };
            RuleComparison {
                rule: rule.to_owned(),
                fired: of_rule.iter().map(BTreeMap::len).collect(),
                added: only(1, 0),
                removed: only(0, 1),
            }
        })
        .collect()
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("never".to_owned(), |s| format!("{:.0} s", s))
}

impl Report {
    /// Writes the report as aligned text.
    pub fn write_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "{} posts linked, {} of them not labelled as a campaign's", self.posts, self.background_posts)?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<32} {:>7} {:>8} {:>16} {:>18}",
            "rules", "pages", "tickets", "false pages /M", "false tickets /M"
        )?;
        for side in &self.sides {
            writeln!(
                out,
                "{:<32} {:>7} {:>8} {:>16.2} {:>18.2}",
                side.rules, side.pages, side.tickets, side.false_pages_per_million, side.false_tickets_per_million
            )?;
        }
        if self.sides.iter().any(|side| !side.campaigns.is_empty()) {
            writeln!(out)?;
            writeln!(
                out,
                "labelled campaigns: time from the first post to the first page / ticket (a page the circuit breaker \
                 held, if that was the only one)"
            )?;
            let names: Vec<&str> = self.sides.iter().map(|side| side.rules.as_str()).collect();
            write!(out, "{:<28} {:>6}", "campaign", "posts")?;
            for name in &names {
                write!(out, " {:>24}", truncate(name, 24))?;
            }
            writeln!(out)?;
            for (index, campaign) in self.sides[0].campaigns.iter().enumerate() {
                write!(out, "{:<28} {:>6}", truncate(&campaign.campaign, 28), campaign.posts)?;
                for side in &self.sides {
                    let timing = &side.campaigns[index];
                    let held = match timing.first_held_page_after_secs {
                        Some(after) if timing.first_page_after_secs.is_none() => format!(" (held {after:.0} s)"),
                        _ => String::new(),
                    };
                    let cell = format!(
                        "{} / {}{held}",
                        seconds(timing.first_page_after_secs),
                        seconds(timing.first_ticket_after_secs)
                    );
                    write!(out, " {cell:>24}")?;
                }
                writeln!(out)?;
            }
        }
        writeln!(out)?;
        write!(out, "{:<32}", "rule: alerts started")?;
        for side in &self.sides {
            write!(out, " {:>24}", truncate(&side.rules, 24))?;
        }
        writeln!(out, " {:>7} {:>8}", "added", "removed")?;
        for rule in &self.rules {
            write!(out, "{:<32}", truncate(&rule.rule, 32))?;
            for fired in &rule.fired {
                write!(out, " {fired:>24}")?;
            }
            writeln!(out, " {:>7} {:>8}", rule.added.len(), rule.removed.len())?;
        }
        for rule in &self.rules {
            for (what, alerts) in [("added", &rule.added), ("removed", &rule.removed)] {
                for alert in alerts {
                    writeln!(out)?;
                    writeln!(
                        out,
                        "{what}: {} on cascade {} at {} ({})",
                        rule.rule, alert.cascade_id, alert.started_at, alert.alert_id
                    )?;
                    writeln!(out, "  {}", alert.sql)?;
                }
            }
        }
        Ok(())
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let tail: String = text.chars().rev().take(width - 1).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}
