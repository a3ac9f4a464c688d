//! Alert delivery to Alertmanager's API v2, and what every alert carries for on-call.
//!
//! The [`AlertDispatcher`] task receives alert events from the pipeline through a bounded channel
//! (a full channel slows the consumer rather than dropping alerts). It keeps every firing alert and
//! re-sends them all every `resend_interval_ms`, as Alertmanager expects of a client, with `endsAt`
//! a few intervals ahead so a crashed echotrace's alerts expire rather than page forever. A resolved
//! alert is sent with `endsAt` set and kept until Alertmanager has accepted it. A failed push is
//! counted, logged, and retried with exponential backoff (up to 30 s); nothing is dropped.

use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use echotrace_core::score::alerts::{AlertEvent, AlertState};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// An alert event on its way out, with the produce time of the post behind it.
#[derive(Debug, Clone)]
pub struct AlertNotice {
    /// The event.
    pub event: AlertEvent,
    /// When the triggering post was produced to Kafka (for time-to-alert), if known.
    pub produced_at: Option<DateTime<Utc>>,
}

/// The SQL that returns the posts of an alert's cascade, including cascades merged into it, over
/// the stored datasets (`echotrace query`, DataFusion).
pub fn alert_sql(cascade_id: &str) -> String {
    let id = cascade_id.replace('\'', "''");
    format!(
        "SELECT post_id, platform, author_id, created_at, parent_id, parent_kind, generation, text FROM posts \
         WHERE cascade_id = '{id}' OR cascade_id IN (SELECT absorbed_cascade_id FROM cascade_merges \
         WHERE into_cascade_id = '{id}') ORDER BY created_at"
    )
}

/// The explorer's view of a cascade.
pub fn cascade_url(public_url: &str, cascade_id: &str) -> String {
    format!("{}/view/cascades/{cascade_id}", public_url.trim_end_matches('/'))
}

/// The explorer's view of an alert.
pub fn alert_url(public_url: &str, alert_id: &str) -> String {
    format!("{}/view/alerts/{alert_id}", public_url.trim_end_matches('/'))
}

/// The Alertmanager v2 representation of an alert.
fn to_alertmanager(event: &AlertEvent, public_url: &str, ends_at: DateTime<Utc>) -> Value {
    let features = &event.features;
    let target =
        features.top_target.as_ref().map(|(account, n)| format!("@{account} ({n} mentions)")).unwrap_or_default();
    let evidence: Vec<String> = event.evidence.iter().map(|(k, v)| format!("{k}={}", round(*v))).collect();
    json!({
        "labels": {
            "alertname": event.rule,
            "severity": event.severity,
            "cascade_id": event.cascade_id,
            "service": "echotrace",
        },
        "annotations": {
            "summary": event.summary,
            "description": format!(
                "Cascade {} (root {}) has {} posts on {} platform(s) [{}], {} authors, {} posts/min, {:.0}% automated-looking, coordination {}{}.",
                event.cascade_id, event.root_post_id, features.size, features.platforms, event.platforms.join(", "),
                features.distinct_authors, round(features.posts_per_minute), features.automated_share * 100.0,
                features.coordination,
                if target.is_empty() { String::new() } else { format!(", most mentioned {target}") },
            ),
            "root_post_id": event.root_post_id,
            "triggered_by": event.triggered_by.clone().unwrap_or_default(),
            "platforms": event.platforms.join(","),
            "evidence": evidence.join(" "),
            "cascade_url": cascade_url(public_url, &event.cascade_id),
            "alert_url": alert_url(public_url, &event.alert_id),
            "sql": alert_sql(&event.cascade_id),
            "runbook": format!("deploy/RUNBOOK.md#{}", event.rule),
        },
        "startsAt": event.started_at.to_rfc3339(),
        "endsAt": ends_at.to_rfc3339(),
        "generatorURL": alert_url(public_url, &event.alert_id),
    })
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Pushes alerts to Alertmanager until the channel closes.
pub struct AlertDispatcher {
    client: reqwest::Client,
    endpoint: String,
    public_url: String,
    resend: Duration,
    metrics: Arc<Metrics>,
    firing: HashMap<String, AlertNotice>,
    resolved: HashMap<String, (AlertNotice, DateTime<Utc>)>,
    undelivered_since: HashMap<String, DateTime<Utc>>,
}

impl AlertDispatcher {
    /// A dispatcher for Alertmanager at `base_url`.
    pub fn new(base_url: &str, public_url: &str, resend: Duration, metrics: Arc<Metrics>) -> AlertDispatcher {
        AlertDispatcher {
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a plain HTTP client"),
            endpoint: format!("{}/api/v2/alerts", base_url.trim_end_matches('/')),
            public_url: public_url.to_owned(),
            resend,
            metrics,
            firing: HashMap::new(),
            resolved: HashMap::new(),
            undelivered_since: HashMap::new(),
        }
    }

    /// The dispatcher `config.alerting` asks for, started on a task of its own, and the channel to
    /// it; none without `alerting.alertmanager_url`. Its alerts link to `alerting.public_url`, or
    /// to `api_address` where that is empty.
    pub fn start(
        config: &crate::config::Config,
        api_address: std::net::SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Option<(mpsc::Sender<AlertNotice>, tokio::task::JoinHandle<()>)> {
        let alerting = &config.alerting;
        if alerting.alertmanager_url.is_empty() {
            return None;
        }
        let public_url = match alerting.public_url.as_str() {
            "" => format!("http://{api_address}"),
            url => url.to_owned(),
        };
        let resend = Duration::from_millis(alerting.resend_interval_ms.max(100));
        let dispatcher = AlertDispatcher::new(&alerting.alertmanager_url, &public_url, resend, metrics);
        let (sender, receiver) = mpsc::channel(1024);
        Some((sender, tokio::spawn(dispatcher.run(receiver))))
    }

    /// Runs until `notices` is closed and everything pending has been delivered (or, after the
    /// channel closes, until one last attempt).
    pub async fn run(mut self, mut notices: mpsc::Receiver<AlertNotice>) {
        let mut backoff = self.resend;
        let mut next_push = tokio::time::Instant::now() + self.resend;
        loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(notice) => {
                        self.take(notice);
                        // New state goes out at once; the resend timer keeps its rhythm.
                        if self.push().await { backoff = self.resend } else { next_push = tokio::time::Instant::now() + backoff; backoff = (backoff * 2).min(Duration::from_secs(30)); }
                    }
                    None => {
                        self.push().await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(next_push) => {
                    if self.push().await { backoff = self.resend } else { backoff = (backoff * 2).min(Duration::from_secs(30)); }
                    next_push = tokio::time::Instant::now() + backoff;
                }
            }
        }
    }

    fn take(&mut self, notice: AlertNotice) {
        // A shadow rule's alerts and those the circuit breaker holds are stored and counted
        // upstream, and stop here: they never page (the breaker's alert_flood page does).
        if notice.event.shadow || notice.event.held {
            return;
        }
        let id = notice.event.alert_id.clone();
        match notice.event.state {
            AlertState::Firing => {
                // Time to alert is measured for the start of an alert, not for its growth updates.
                if notice.event.starts {
                    self.undelivered_since.entry(id.clone()).or_insert_with(Utc::now);
                }
                let previous = self.firing.insert(id, notice.clone());
                // Keep the produce time of the post that first fired it, for time-to-alert.
                if let (Some(previous), Some(current)) = (previous, self.firing.get_mut(&notice.event.alert_id)) {
                    current.produced_at = previous.produced_at.or(current.produced_at);
                }
            }
            AlertState::Resolved => {
                self.firing.remove(&id);
                self.resolved.insert(id, (notice, Utc::now()));
            }
        }
    }

    /// Sends every firing and not-yet-delivered resolved alert; true when Alertmanager accepted them.
    async fn push(&mut self) -> bool {
        if self.firing.is_empty() && self.resolved.is_empty() {
            return true;
        }
        let now = Utc::now();
        let ends_firing = now + chrono::Duration::from_std(self.resend * 4).unwrap_or_default();
        let mut body: Vec<Value> =
            self.firing.values().map(|n| to_alertmanager(&n.event, &self.public_url, ends_firing)).collect();
        body.extend(self.resolved.values().map(|(n, at)| to_alertmanager(&n.event, &self.public_url, *at)));
        let result = self.client.post(&self.endpoint).json(&body).send().await.and_then(|r| r.error_for_status());
        match result {
            Ok(_) => {
                self.metrics.alert_deliveries.inc();
                let delivered_at = Utc::now();
                for (id, notice) in &self.firing {
                    if self.undelivered_since.remove(id).is_some()
                        && let Some(produced) = notice.produced_at
                    {
                        let seconds = (delivered_at - produced).num_milliseconds() as f64 / 1000.0;
                        self.metrics.time_to_alert_seconds.observe(seconds.max(0.0));
                    }
                }
                self.resolved.clear();
                true
            }
            Err(error) => {
                self.metrics.alert_delivery_failures.inc();
                tracing::warn!(%error, endpoint = %self.endpoint, alerts = body.len(), "cannot deliver alerts to Alertmanager; retrying");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use echotrace_core::score::features::CascadeFeatures;
    use std::sync::Mutex;

    fn event(state: AlertState) -> AlertEvent {
        let at = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        AlertEvent {
            alert_id: "a1".into(),
            rule: "amplification_campaign".into(),
            severity: "critical".into(),
            summary: "s".into(),
            cascade_id: "c1".into(),
            root_post_id: "x:1".into(),
            platforms: vec!["x".into(), "bluesky".into()],
            state,
            starts: state == AlertState::Firing,
            event_time: at,
            started_at: at,
            triggered_by: Some("x:9".into()),
            merged_into: None,
            evidence: Default::default(),
            shadow: false,
            held: false,
            features: CascadeFeatures::default(),
        }
    }

    /// An Alertmanager stand-in that refuses the first `failures` pushes and records the rest.
    async fn flaky_alertmanager(failures: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0usize));
        let sink = accepted.clone();
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            axum::routing::post(move |axum::Json(body): axum::Json<Vec<Value>>| {
                let (sink, attempts) = (sink.clone(), attempts.clone());
                async move {
                    let mut attempts = attempts.lock().unwrap();
                    *attempts += 1;
                    if *attempts <= failures {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    sink.lock().unwrap().extend(body);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), accepted)
    }

    #[tokio::test]
    async fn retries_until_alertmanager_accepts_and_loses_nothing() {
        let (url, accepted) = flaky_alertmanager(3).await;
        let metrics = Arc::new(Metrics::new());
        let dispatcher =
            AlertDispatcher::new(&url, "http://echotrace:9464", Duration::from_millis(50), metrics.clone());
        let (sender, receiver) = mpsc::channel(8);
        let task = tokio::spawn(dispatcher.run(receiver));
        sender.send(AlertNotice { event: event(AlertState::Firing), produced_at: Some(Utc::now()) }).await.unwrap();
        sender.send(AlertNotice { event: event(AlertState::Resolved), produced_at: None }).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !accepted.lock().unwrap().iter().any(|a| a["endsAt"].as_str() < Some(Utc::now().to_rfc3339().as_str())) {
            assert!(std::time::Instant::now() < deadline, "the resolution never got through");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(sender);
        task.await.unwrap();
        assert!(metrics.alert_delivery_failures.get() >= 3, "failures are counted");
        assert!(metrics.alert_deliveries.get() >= 1);
        let first = accepted.lock().unwrap()[0].clone();
        assert_eq!(first["labels"]["alertname"], "amplification_campaign");
        assert_eq!(first["labels"]["cascade_id"], "c1");
        assert_eq!(first["annotations"]["cascade_url"], "http://echotrace:9464/view/cascades/c1");
        assert_eq!(first["annotations"]["runbook"], "deploy/RUNBOOK.md#amplification_campaign");
    }

    #[tokio::test]
    async fn shadow_and_held_alerts_never_reach_alertmanager() {
        let (url, accepted) = flaky_alertmanager(0).await;
        let metrics = Arc::new(Metrics::new());
        let dispatcher = AlertDispatcher::new(&url, "http://echotrace:9464", Duration::from_millis(50), metrics);
        let (sender, receiver) = mpsc::channel(8);
        let task = tokio::spawn(dispatcher.run(receiver));
        let shadow = AlertEvent { alert_id: "a-shadow".into(), shadow: true, ..event(AlertState::Firing) };
        let held = AlertEvent { alert_id: "a-held".into(), held: true, ..event(AlertState::Firing) };
        let flood = AlertEvent { alert_id: "a-flood".into(), rule: "alert_flood".into(), ..event(AlertState::Firing) };
        for event in [shadow, held, flood] {
            sender.send(AlertNotice { event, produced_at: None }).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while accepted.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing was pushed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Several resends later, still only the flood page.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(sender);
        task.await.unwrap();
        let names: std::collections::BTreeSet<String> =
            accepted.lock().unwrap().iter().map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["alert_flood"]);
    }

    #[test]
    fn the_sql_names_the_cascade_and_its_merged_parts() {
        let sql = alert_sql("c0123");
        assert!(sql.contains("cascade_id = 'c0123'"));
        assert!(sql.contains("into_cascade_id = 'c0123'"));
        assert_eq!(alert_sql("c'x").matches("'c''x'").count(), 2, "quotes are escaped");
        assert_eq!(cascade_url("http://h:1/", "c1"), "http://h:1/view/cascades/c1");
    }
}
