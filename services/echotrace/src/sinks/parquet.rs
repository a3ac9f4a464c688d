//! The Parquet sink: `posts/`, `edges/`, `cascades/`, `cascade_merges/` and `alerts/` datasets under one
//! directory.
//!
//! Rows are buffered in memory and written by [`ParquetSink::flush`], one file per dataset per flush.
//! Each file is written under a hidden temporary name (`.part-….parquet.tmp`, which Parquet readers
//! skip), fsynced, renamed into place and the directory fsynced: a crash never leaves a half file, and
//! once `flush` returns the rows are durable, so the consumer may commit the offsets behind them.
//! Columns are documented in `schemas/README.md`.

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use echotrace_core::detector::Detection;
use echotrace_core::records::{CascadeRecord, EdgeRecord, MergeRecord, PostRecord};
use echotrace_core::score::alerts::AlertEvent;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why rows could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating, writing, syncing or renaming a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Encoding the rows failed.
    #[error("cannot encode {dataset} rows as Parquet: {message}")]
    Encode {
        /// The dataset.
        dataset: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Buffers detections and writes them as Parquet files.
pub struct ParquetSink {
    dir: PathBuf,
    posts: Vec<PostRecord>,
    edges: Vec<EdgeRecord>,
    merges: Vec<MergeRecord>,
    alerts: Vec<(AlertEvent, DateTime<Utc>)>,
    /// The newest state of each cascade changed since the last flush.
    cascades: HashMap<String, CascadeRecord>,
    files_written: u64,
}

impl ParquetSink {
    /// A sink writing under `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<ParquetSink, SinkError> {
        for dataset in ["posts", "edges", "cascades", "cascade_merges", "alerts"] {
            let path = dir.join(dataset);
            fs::create_dir_all(&path).map_err(|source| SinkError::Io { path, source })?;
        }
        Ok(ParquetSink {
            dir: dir.to_owned(),
            posts: Vec::new(),
            edges: Vec::new(),
            merges: Vec::new(),
            alerts: Vec::new(),
            cascades: HashMap::new(),
            files_written: 0,
        })
    }

    /// Buffers everything one post produced.
    pub fn push(&mut self, detection: Detection) {
        for merge in &detection.merges {
            self.cascades.remove(&merge.absorbed_cascade_id);
        }
        self.cascades.insert(detection.cascade.cascade_id.clone(), detection.cascade);
        self.posts.push(detection.post);
        self.edges.extend(detection.edges);
        self.merges.extend(detection.merges);
    }

    /// Buffers an alert event, stamped with the wall clock (`emitted_at`).
    pub fn push_alert(&mut self, event: AlertEvent) {
        self.alerts.push((event, Utc::now()));
    }

    /// Posts buffered since the last flush.
    pub fn buffered_posts(&self) -> usize {
        self.posts.len()
    }

    /// Writes every buffered row durably; returns the number of rows written.
    pub fn flush(&mut self) -> Result<usize, SinkError> {
        let now = Utc::now();
        let stamp = format!("{}-{:06}", now.timestamp_millis(), self.files_written);
        let mut rows = 0;
        if !self.posts.is_empty() {
            rows += self.write("posts", &stamp, posts_batch(&self.posts))?;
        }
        if !self.edges.is_empty() {
            rows += self.write("edges", &stamp, edges_batch(&self.edges))?;
        }
        if !self.cascades.is_empty() {
            let mut cascades: Vec<&CascadeRecord> = self.cascades.values().collect();
            cascades.sort_by(|a, b| a.cascade_id.cmp(&b.cascade_id));
            rows += self.write("cascades", &stamp, cascades_batch(&cascades, now))?;
        }
        if !self.merges.is_empty() {
            rows += self.write("cascade_merges", &stamp, merges_batch(&self.merges))?;
        }
        if !self.alerts.is_empty() {
            rows += self.write("alerts", &stamp, alerts_batch(&self.alerts))?;
        }
        self.posts.clear();
        self.edges.clear();
        self.merges.clear();
        self.alerts.clear();
        self.cascades.clear();
        self.files_written += 1;
        Ok(rows)
    }

    fn write(&self, dataset: &'static str, stamp: &str, batch: RecordBatch) -> Result<usize, SinkError> {
        let dir = self.dir.join(dataset);
        let tmp = dir.join(format!(".part-{stamp}.parquet.tmp"));
        let done = dir.join(format!("part-{stamp}.parquet"));
        let encode = |e: parquet::errors::ParquetError| SinkError::Encode { dataset, message: e.to_string() };
        let file = File::create(&tmp).map_err(|source| SinkError::Io { path: tmp.clone(), source })?;
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(encode)?;
        writer.write(&batch).map_err(encode)?;
        let file = writer.into_inner().map_err(encode)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SinkError::Io { path, source }
        };
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &done).map_err(io(&done))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        Ok(batch.num_rows())
    }
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn timestamps(values: impl Iterator<Item = DateTime<Utc>>) -> ArrayRef {
    Arc::new(
        TimestampMillisecondArray::from(values.map(|t| t.timestamp_millis()).collect::<Vec<_>>()).with_timezone("UTC"),
    )
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn optional_strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match their schema")
}

/// The `posts` dataset's rows.
pub fn posts_batch(posts: &[PostRecord]) -> RecordBatch {
    let now = Utc::now();
    batch(
        vec![
            Field::new("post_id", DataType::Utf8, false),
            Field::new("platform", DataType::Utf8, false),
            Field::new("author_id", DataType::Utf8, false),
            Field::new("author_handle", DataType::Utf8, false),
            Field::new("created_at", timestamp_type(), false),
            Field::new("text", DataType::Utf8, false),
            Field::new("lang", DataType::Utf8, true),
            Field::new("cascade_id", DataType::Utf8, false),
            Field::new("parent_id", DataType::Utf8, true),
            Field::new("parent_kind", DataType::Utf8, true),
            Field::new("generation", DataType::UInt32, false),
            Field::new("summary_depth", DataType::UInt32, false),
            Field::new("simhash", DataType::UInt64, false),
            Field::new("fingerprint_version", DataType::UInt16, false),
            Field::new("ingested_at", timestamp_type(), false),
        ],
        vec![
            strings(posts.iter().map(|p| p.post_id.as_str())),
            strings(posts.iter().map(|p| p.platform.as_str())),
            strings(posts.iter().map(|p| p.author_id.as_str())),
            strings(posts.iter().map(|p| p.author_handle.as_str())),
            timestamps(posts.iter().map(|p| p.created_at)),
            strings(posts.iter().map(|p| p.text.as_str())),
            optional_strings(posts.iter().map(|p| p.lang.as_deref())),
            strings(posts.iter().map(|p| p.cascade_id.as_str())),
            optional_strings(posts.iter().map(|p| p.parent_id.as_deref())),
            optional_strings(posts.iter().map(|p| p.parent_kind.map(|k| k.as_str()))),
            Arc::new(UInt32Array::from_iter_values(posts.iter().map(|p| p.generation))),
            Arc::new(UInt32Array::from_iter_values(posts.iter().map(|p| p.summary_depth))),
            Arc::new(UInt64Array::from_iter_values(posts.iter().map(|p| p.simhash))),
            Arc::new(UInt16Array::from_iter_values(posts.iter().map(|p| p.fingerprint_version))),
            timestamps(posts.iter().map(|_| now)),
        ],
    )
}

/// The `edges` dataset's rows.
pub fn edges_batch(edges: &[EdgeRecord]) -> RecordBatch {
    batch(
        vec![
            Field::new("child_id", DataType::Utf8, false),
            Field::new("parent_id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("is_primary", DataType::Boolean, false),
            Field::new("cascade_id", DataType::Utf8, false),
            Field::new("hamming_distance", DataType::UInt8, true),
            Field::new("jaccard", DataType::Float32, true),
            Field::new("time_delta_ms", DataType::Int64, true),
            Field::new("cosine", DataType::Float32, true),
            Field::new("word_overlap", DataType::Float32, true),
            Field::new("cosine_margin", DataType::Float32, true),
            Field::new("length_ratio", DataType::Float32, true),
            Field::new("link_score", DataType::Float32, true),
            Field::new("origin_score", DataType::Float32, true),
            Field::new("evidence", DataType::Utf8, true),
            Field::new("evidence_version", DataType::Utf8, false),
            Field::new("created_at", timestamp_type(), false),
        ],
        vec![
            strings(edges.iter().map(|e| e.child_id.as_str())),
            strings(edges.iter().map(|e| e.parent_id.as_str())),
            strings(edges.iter().map(|e| e.kind.as_str())),
            Arc::new(BooleanArray::from_iter(edges.iter().map(|e| Some(e.is_primary)))),
            strings(edges.iter().map(|e| e.cascade_id.as_str())),
            Arc::new(edges.iter().map(|e| e.hamming_distance).collect::<UInt8Array>()),
            Arc::new(edges.iter().map(|e| e.jaccard).collect::<Float32Array>()),
            Arc::new(edges.iter().map(|e| e.time_delta_ms).collect::<Int64Array>()),
            Arc::new(edges.iter().map(|e| e.semantic.map(|s| s.cosine)).collect::<Float32Array>()),
            Arc::new(edges.iter().map(|e| e.semantic.map(|s| s.word_overlap)).collect::<Float32Array>()),
            Arc::new(edges.iter().map(|e| e.semantic.map(|s| s.margin)).collect::<Float32Array>()),
            Arc::new(edges.iter().map(|e| e.semantic.map(|s| s.length_ratio)).collect::<Float32Array>()),
            Arc::new(edges.iter().map(|e| e.semantic.map(|s| s.score)).collect::<Float32Array>()),
            Arc::new(edges.iter().map(|e| e.semantic.and_then(|s| s.origin_score)).collect::<Float32Array>()),
            optional_strings(edges.iter().map(|e| e.evidence.as_deref())),
            strings(edges.iter().map(|e| e.evidence_version())),
            timestamps(edges.iter().map(|e| e.created_at)),
        ],
    )
}

/// The `cascades` dataset's rows, stamped with `updated_at`.
pub fn cascades_batch(cascades: &[&CascadeRecord], updated_at: DateTime<Utc>) -> RecordBatch {
    let mut platforms = ListBuilder::new(StringBuilder::new());
    for cascade in cascades {
        platforms.append_value(cascade.platforms.iter().map(Some));
    }
    let platforms = platforms.finish();
    let item = Field::new("item", DataType::Utf8, true);
    batch(
        vec![
            Field::new("cascade_id", DataType::Utf8, false),
            Field::new("root_post_id", DataType::Utf8, false),
            Field::new("size", DataType::UInt64, false),
            Field::new("platforms", DataType::List(Arc::new(item)), false),
            Field::new("platform_count", DataType::UInt32, false),
            Field::new("depth", DataType::UInt32, false),
            Field::new("summary_depth", DataType::UInt32, false),
            Field::new("first_seen", timestamp_type(), false),
            Field::new("last_seen", timestamp_type(), false),
            Field::new("updated_at", timestamp_type(), false),
        ],
        vec![
            strings(cascades.iter().map(|c| c.cascade_id.as_str())),
            strings(cascades.iter().map(|c| c.root_post_id.as_str())),
            Arc::new(UInt64Array::from_iter_values(cascades.iter().map(|c| c.size))),
            Arc::new(platforms),
            Arc::new(UInt32Array::from_iter_values(cascades.iter().map(|c| c.platforms.len() as u32))),
            Arc::new(UInt32Array::from_iter_values(cascades.iter().map(|c| c.depth))),
            Arc::new(UInt32Array::from_iter_values(cascades.iter().map(|c| c.summary_depth))),
            timestamps(cascades.iter().map(|c| c.first_seen)),
            timestamps(cascades.iter().map(|c| c.last_seen)),
            timestamps(cascades.iter().map(|_| updated_at)),
        ],
    )
}

/// The `alerts` dataset's rows: every alert event with its wall-clock emission time.
pub fn alerts_batch(alerts: &[(AlertEvent, DateTime<Utc>)]) -> RecordBatch {
    let mut platforms = ListBuilder::new(StringBuilder::new());
    for (alert, _) in alerts {
        platforms.append_value(alert.platforms.iter().map(Some));
    }
    let item = Field::new("item", DataType::Utf8, true);
    batch(
        vec![
            Field::new("alert_id", DataType::Utf8, false),
            Field::new("rule", DataType::Utf8, false),
            Field::new("severity", DataType::Utf8, false),
            Field::new("cascade_id", DataType::Utf8, false),
            Field::new("root_post_id", DataType::Utf8, false),
            Field::new("platforms", DataType::List(Arc::new(item)), false),
            Field::new("state", DataType::Utf8, false),
            Field::new("event_time", timestamp_type(), false),
            Field::new("started_at", timestamp_type(), false),
            Field::new("emitted_at", timestamp_type(), false),
            Field::new("triggered_by", DataType::Utf8, true),
            Field::new("merged_into", DataType::Utf8, true),
            Field::new("summary", DataType::Utf8, false),
            Field::new("evidence", DataType::Utf8, false),
            Field::new("features", DataType::Utf8, false),
            Field::new("sql", DataType::Utf8, false),
        ],
        vec![
            strings(alerts.iter().map(|(a, _)| a.alert_id.as_str())),
            strings(alerts.iter().map(|(a, _)| a.rule.as_str())),
            strings(alerts.iter().map(|(a, _)| a.severity.as_str())),
            strings(alerts.iter().map(|(a, _)| a.cascade_id.as_str())),
            strings(alerts.iter().map(|(a, _)| a.root_post_id.as_str())),
            Arc::new(platforms.finish()),
            strings(alerts.iter().map(|(a, _)| a.state.as_str())),
            timestamps(alerts.iter().map(|(a, _)| a.event_time)),
            timestamps(alerts.iter().map(|(a, _)| a.started_at)),
            timestamps(alerts.iter().map(|(_, emitted)| *emitted)),
            optional_strings(alerts.iter().map(|(a, _)| a.triggered_by.as_deref())),
            optional_strings(alerts.iter().map(|(a, _)| a.merged_into.as_deref())),
            strings(alerts.iter().map(|(a, _)| a.summary.as_str())),
            Arc::new(StringArray::from_iter_values(
                alerts.iter().map(|(a, _)| serde_json::to_string(&a.evidence).expect("evidence serializes")),
            )),
            Arc::new(StringArray::from_iter_values(
                alerts.iter().map(|(a, _)| serde_json::to_string(&a.features).expect("features serialize")),
            )),
            Arc::new(StringArray::from_iter_values(
                alerts.iter().map(|(a, _)| crate::alerting::alert_sql(&a.cascade_id)),
            )),
        ],
    )
}

/// The `cascade_merges` dataset's rows.
pub fn merges_batch(merges: &[MergeRecord]) -> RecordBatch {
    batch(
        vec![
            Field::new("absorbed_cascade_id", DataType::Utf8, false),
            Field::new("into_cascade_id", DataType::Utf8, false),
            Field::new("bridging_post_id", DataType::Utf8, false),
            Field::new("merged_at", timestamp_type(), false),
        ],
        vec![
            strings(merges.iter().map(|m| m.absorbed_cascade_id.as_str())),
            strings(merges.iter().map(|m| m.into_cascade_id.as_str())),
            strings(merges.iter().map(|m| m.bridging_post_id.as_str())),
            timestamps(merges.iter().map(|m| m.merged_at)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use echotrace_core::detector::{Detector, DetectorConfig};
    use echotrace_core::post::Post;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn post(id: &str, text: &str, repost_of: Option<&str>) -> Post {
        let repost = repost_of.map(|r| format!(",\"repost_of\":\"{r}\"")).unwrap_or_default();
        Post::from_json(
            format!(r#"{{"id":"{id}","platform":"x","author":{{"id":"a","handle":"a"}},"created_at":"2026-11-01T09:00:00Z","text":"{text}"{repost}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn flush_writes_complete_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = ParquetSink::new(dir.path()).unwrap();
        let mut detector = Detector::new(DetectorConfig::default());
        sink.push(detector.process(post("x:1", "an original post", None)).unwrap());
        sink.push(detector.process(post("x:2", "", Some("x:1"))).unwrap());
        assert_eq!(sink.flush().unwrap(), 2 + 1 + 1);
        assert_eq!(sink.flush().unwrap(), 0, "nothing buffered, nothing written");

        let files: Vec<_> = fs::read_dir(dir.path().join("posts")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files.len(), 1);
        assert!(files[0].to_string_lossy().starts_with("part-"), "no temporary file left: {files:?}");
        let file = File::open(dir.path().join("posts").join(&files[0])).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let parents = batch.column_by_name("parent_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert!(parents.is_null(0));
        assert_eq!(parents.value(1), "x:1");
    }
}
