//! Review decisions: an analyst marks a cascade or an alert (confirmed campaign, organic, benign,
//! needs escalation) with a note. Decisions are appended, never edited, to the `reviews/` dataset
//! (one Parquet file per decision, written atomically, partitioned by the hour it was made), so the
//! audit trail is read with SQL like every other dataset.
//!
//! Who decided comes from configuration: each reviewer has a token (`http.reviewers`, name →
//! token), and a decision is recorded under the name whose token the request presents. A request
//! without one is refused; so is every request while no reviewer is configured.

use crate::sinks::parquet::{self as sink, SinkError};
use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow_array::{Array, RecordBatch, StringArray, TimestampMillisecondArray};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The longest note accepted, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;

/// What an analyst decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A coordinated campaign.
    ConfirmedCampaign,
    /// Organic spread.
    Organic,
    /// Not harmful.
    Benign,
    /// Needs someone with more authority.
    NeedsEscalation,
}

impl Decision {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::ConfirmedCampaign => "confirmed_campaign",
            Decision::Organic => "organic",
            Decision::Benign => "benign",
            Decision::NeedsEscalation => "needs_escalation",
        }
    }
}

/// A decision as the page sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// The cascade reviewed (the alert's cascade for an alert).
    pub cascade_id: String,
    /// The alert reviewed, if the decision is about one.
    pub alert_id: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// Why.
    #[serde(default)]
    pub note: String,
}

/// A recorded decision: a row of `reviews/`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    /// Unique id of the decision.
    pub review_id: String,
    /// When it was recorded.
    pub reviewed_at: DateTime<Utc>,
    /// Who, by the configured name of the token presented.
    pub reviewer: String,
    /// The decision.
    pub decision: Decision,
    /// Why.
    pub note: String,
    /// The cascade.
    pub cascade_id: String,
    /// The alert, if the decision is about one.
    pub alert_id: Option<String>,
}

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// Writing the decision failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// The `reviews/` dataset and the decisions in it, in the order they were made.
pub struct ReviewStore {
    dir: PathBuf,
    writer_id: String,
    recorded: Mutex<Vec<Review>>,
}

impl ReviewStore {
    /// The store under `data_dir/reviews`, with the decisions already there.
    pub fn open(data_dir: &Path) -> Result<ReviewStore, SinkError> {
        let dir = data_dir.join("reviews");
        std::fs::create_dir_all(&dir).map_err(sink::io_error(&dir))?;
        let mut recorded = Vec::new();
        for file in parquet_files(&dir) {
            match read_file(&file) {
                Ok(reviews) => recorded.extend(reviews),
                Err(error) => tracing::warn!(file = %file.display(), %error, "cannot read a reviews file; skipping it"),
            }
        }
        recorded.sort_by(|a: &Review, b: &Review| (a.reviewed_at, &a.review_id).cmp(&(b.reviewed_at, &b.review_id)));
        Ok(ReviewStore { dir, writer_id: sink::writer_id(), recorded: Mutex::new(recorded) })
    }

    /// Records `request` by `reviewer`: durable when this returns.
    pub fn record(&self, reviewer: &str, request: ReviewRequest) -> Result<Review, ReviewError> {
        if request.cascade_id.trim().is_empty() {
            return Err(ReviewError::Invalid("a review needs the cascade_id it is about".into()));
        }
        if request.note.chars().count() > MAX_NOTE_CHARS {
            return Err(ReviewError::Invalid(format!("the note is longer than {MAX_NOTE_CHARS} characters")));
        }
        let mut recorded = self.recorded.lock().expect("reviews lock poisoned");
        // At the stored precision, so what is shown now is what is read back later.
        let reviewed_at = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
        let review = Review {
            review_id: format!("{}-{}-{:06}", reviewed_at.timestamp_millis(), self.writer_id, recorded.len()),
            reviewed_at,
            reviewer: reviewer.to_owned(),
            decision: request.decision,
            note: request.note,
            cascade_id: request.cascade_id,
            alert_id: request.alert_id.filter(|id| !id.is_empty()),
        };
        let dir = self.dir.join(sink::partition_of(reviewed_at));
        std::fs::create_dir_all(&dir).map_err(sink::io_error(&dir))?;
        sink::write_file("reviews", &dir, &format!("part-{}.parquet", review.review_id), &reviews_batch(&[&review]))?;
        recorded.push(review.clone());
        Ok(review)
    }

    /// The decisions about a cascade (and its alerts), or about one alert, oldest first.
    pub fn about(&self, cascade_id: Option<&str>, alert_id: Option<&str>) -> Vec<Review> {
        let recorded = self.recorded.lock().expect("reviews lock poisoned");
        recorded
            .iter()
            .filter(|r| cascade_id.is_none_or(|id| r.cascade_id == id))
            .filter(|r| alert_id.is_none_or(|id| r.alert_id.as_deref() == Some(id)))
            .cloned()
            .collect()
    }
}

/// The configured reviewers: name → token.
#[derive(Clone, Default)]
pub struct Reviewers(BTreeMap<String, String>);

impl Reviewers {
    /// Reviewers from `http.reviewers`; those with an empty token are left out.
    pub fn new(tokens: &BTreeMap<String, String>) -> Reviewers {
        Reviewers(tokens.iter().filter(|(_, token)| !token.is_empty()).map(|(n, t)| (n.clone(), t.clone())).collect())
    }

    /// Whether any reviewer is configured.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// The name of the reviewer whose token the `authorization` header presents.
    pub fn who(&self, authorization: Option<&str>) -> Option<&str> {
        self.0.iter().find(|(_, token)| crate::access::presents(authorization, token)).map(|(name, _)| name.as_str())
    }
}

/// The rows of `reviews/`.
pub fn reviews_batch(reviews: &[&Review]) -> RecordBatch {
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let strings = |f: fn(&Review) -> &str| Arc::new(StringArray::from_iter_values(reviews.iter().map(|r| f(r))));
    let schema = Schema::new(vec![
        Field::new("review_id", DataType::Utf8, false),
        Field::new("reviewed_at", time, false),
        Field::new("reviewer", DataType::Utf8, false),
        Field::new("decision", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, false),
        Field::new("cascade_id", DataType::Utf8, false),
        Field::new("alert_id", DataType::Utf8, true),
    ]);
    let reviewed_at =
        TimestampMillisecondArray::from_iter_values(reviews.iter().map(|r| r.reviewed_at.timestamp_millis()))
            .with_timezone("UTC");
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            strings(|r| &r.review_id),
            Arc::new(reviewed_at),
            strings(|r| &r.reviewer),
            strings(|r| r.decision.as_str()),
            strings(|r| &r.note),
            strings(|r| &r.cascade_id),
            Arc::new(reviews.iter().map(|r| r.alert_id.as_deref()).collect::<StringArray>()),
        ],
    )
    .expect("columns match their schema")
}

/// Every visible Parquet file under `dir`, at any depth.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                folders.push(path);
            } else if !name.starts_with('.') && name.ends_with(".parquet") {
                files.push(path);
            }
        }
    }
    files
}

/// The decisions in one file of `reviews/`.
fn read_file(path: &Path) -> anyhow::Result<Vec<Review>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()?;
    let mut reviews = Vec::new();
    for batch in reader {
        let batch = batch?;
        let text = |name: &str| -> anyhow::Result<&StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| anyhow::anyhow!("no text column {name}"))
        };
        let times = batch
            .column_by_name("reviewed_at")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
            .ok_or_else(|| anyhow::anyhow!("no timestamp column reviewed_at"))?;
        let (ids, reviewers, decisions, notes, cascades, alerts) = (
            text("review_id")?,
            text("reviewer")?,
            text("decision")?,
            text("note")?,
            text("cascade_id")?,
            text("alert_id")?,
        );
        for row in 0..batch.num_rows() {
            let decision: Decision = serde_json::from_value(serde_json::Value::from(decisions.value(row)))?;
            reviews.push(Review {
                review_id: ids.value(row).to_owned(),
                reviewed_at: DateTime::from_timestamp_millis(times.value(row)).unwrap_or_default(),
                reviewer: reviewers.value(row).to_owned(),
                decision,
                note: notes.value(row).to_owned(),
                cascade_id: cascades.value(row).to_owned(),
                alert_id: (!alerts.is_null(row)).then(|| alerts.value(row).to_owned()),
            });
        }
    }
    Ok(reviews)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(decision: Decision) -> ReviewRequest {
        ReviewRequest { cascade_id: "c1".into(), alert_id: Some("a1".into()), decision, note: "seen before".into() }
    }

    #[test]
    fn decisions_are_appended_durably_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReviewStore::open(dir.path()).unwrap();
        let first = store.record("alice", request(Decision::NeedsEscalation)).unwrap();
        let second = store.record("bob", request(Decision::ConfirmedCampaign)).unwrap();
        assert_ne!(first.review_id, second.review_id);
        let reopened = ReviewStore::open(dir.path()).unwrap();
        assert_eq!(reopened.about(Some("c1"), None), vec![first, second.clone()]);
        assert_eq!(reopened.about(None, Some("a1")).len(), 2);
        assert!(reopened.about(Some("c2"), None).is_empty());
    }

    #[test]
    fn a_review_without_a_cascade_or_with_an_overlong_note_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReviewStore::open(dir.path()).unwrap();
        let mut no_cascade = request(Decision::Benign);
        no_cascade.cascade_id = " ".into();
        assert!(matches!(store.record("alice", no_cascade), Err(ReviewError::Invalid(_))));
        let mut long = request(Decision::Benign);
        long.note = "x".repeat(MAX_NOTE_CHARS + 1);
        assert!(matches!(store.record("alice", long), Err(ReviewError::Invalid(_))));
        assert!(store.about(None, None).is_empty());
    }

    #[test]
    fn the_reviewer_is_the_name_of_the_token_presented() {
        let reviewers = Reviewers::new(&BTreeMap::from([
            ("alice".to_owned(), "token-a".to_owned()),
            ("nobody".to_owned(), String::new()),
        ]));
        assert_eq!(reviewers.who(Some("Bearer token-a")), Some("alice"));
        assert_eq!(reviewers.who(Some("Bearer ")), None);
        assert_eq!(reviewers.who(None), None);
    }
}
