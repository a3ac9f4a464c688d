//! The Parquet sink: `posts/`, `edges/`, `cascades/`, `cascade_merges/` and `alerts/` datasets under one
//! directory (beside `reviews/`, which the explorer writes), each partitioned by event hour (`date=YYYY-MM-DD/hour=HH/`).
//!
//! Rows are buffered in memory and written by [`ParquetSink::flush`], one file per dataset and
//! partition per flush. Each file is written under a hidden temporary name (`.part-….parquet.tmp`,
//! which Parquet readers skip), fsynced, renamed into place and its directory fsynced: a crash never
//! leaves a half file, and once `flush` returns the rows are durable, so the consumer may commit the
//! offsets behind them. Small files are merged later by `echotrace compact` ([`crate::compact`]).
//!
//! Every file carries the layout's [`SCHEMA_VERSION`] in its key-value metadata, and bloom filters on
//! the id columns analysts look rows up by, so a query for one cascade or post reads only the row
//! groups that may hold it. Columns are documented in `schemas/README.md`.

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use echotrace_core::detector::Detection;
use echotrace_core::link::semantic::TextEmbedding;
use echotrace_core::records::{CascadeRecord, EdgeRecord, MergeRecord, PostRecord};
use echotrace_core::score::alerts::AlertEvent;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The version of the output layout and its schemas, in every file's key-value metadata under
/// [`SCHEMA_VERSION_KEY`]. 1: flat dataset folders; 2: partitioned by event hour, with `embedding`.
pub const SCHEMA_VERSION: u32 = 2;

/// The key-value metadata key holding [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "echotrace.schema_version";

/// The datasets, in the order they are written and registered as tables. `reviews/` is written by
/// the explorer ([`crate::explorer::reviews`]), not by this sink.
pub const DATASETS: [&str; 6] = ["posts", "edges", "cascades", "cascade_merges", "alerts", "reviews"];

/// The columns of each dataset that get a bloom filter: the ids a lookup filters by.
pub fn bloom_filter_columns(dataset: &str) -> &'static [&'static str] {
    match dataset {
        "posts" => &["post_id", "cascade_id", "parent_id", "author_id"],
        "edges" => &["child_id", "parent_id", "cascade_id"],
        "cascades" => &["cascade_id", "root_post_id"],
        "cascade_merges" => &["absorbed_cascade_id", "into_cascade_id"],
        _ => &["cascade_id", "alert_id"],
    }
}

/// The partition folder of an event time, relative to its dataset: `date=YYYY-MM-DD/hour=HH`.
pub fn partition_of(time: DateTime<Utc>) -> String {
    time.format("date=%Y-%m-%d/hour=%H").to_string()
}

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

/// A post's row, its embedding when it was embedded, and its place in the order this writer
/// processed posts (`arrival`).
pub type PostRow = (PostRecord, Option<Arc<TextEmbedding>>, u64);

/// Buffers detections and writes them as Parquet files.
pub struct ParquetSink {
    dir: PathBuf,
    /// Tells this sink's files from those of other consumers writing to the same directory.
    writer_id: String,
    store_embeddings: bool,
    posts: Vec<PostRow>,
    edges: Vec<EdgeRecord>,
    merges: Vec<MergeRecord>,
    alerts: Vec<(AlertEvent, DateTime<Utc>)>,
    /// The newest state of each cascade changed since the last flush.
    cascades: HashMap<String, CascadeRecord>,
    flushes: u64,
    /// Posts pushed so far: the next post's `arrival`.
    arrivals: u64,
}

impl ParquetSink {
    /// A sink writing under `dir` (created if missing), storing embeddings with the posts.
    pub fn new(dir: &Path) -> Result<ParquetSink, SinkError> {
        for dataset in DATASETS {
            let path = dir.join(dataset);
            fs::create_dir_all(&path).map_err(|source| SinkError::Io { path, source })?;
        }
        Ok(ParquetSink {
            dir: dir.to_owned(),
            writer_id: writer_id(),
            store_embeddings: true,
            posts: Vec::new(),
            edges: Vec::new(),
            merges: Vec::new(),
            alerts: Vec::new(),
            cascades: HashMap::new(),
            flushes: 0,
            arrivals: 0,
        })
    }

    /// Whether posts' embeddings are written (`output.store_embeddings`).
    pub fn with_embeddings(mut self, store: bool) -> ParquetSink {
        self.store_embeddings = store;
        self
    }

    /// Buffers everything one post produced, with the post's embedding if it was embedded.
    pub fn push(&mut self, detection: Detection, embedding: Option<Arc<TextEmbedding>>) {
        for merge in &detection.merges {
            self.cascades.remove(&merge.absorbed_cascade_id);
        }
        self.cascades.insert(detection.cascade.cascade_id.clone(), detection.cascade);
        self.posts.push((detection.post, embedding.filter(|_| self.store_embeddings), self.arrivals));
        self.arrivals += 1;
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

    /// Writes every buffered row durably, one file per dataset and event-hour partition; returns the
    /// number of rows written.
    pub fn flush(&mut self) -> Result<usize, SinkError> {
        let now = Utc::now();
        let stamp = format!("{}-{}-{:06}", now.timestamp_millis(), self.writer_id, self.flushes);
        let mut rows = 0;
        for (partition, posts) in by_partition(&self.posts, |(p, _, _)| p.created_at) {
            rows += self.write("posts", &partition, &stamp, posts_batch(&posts))?;
        }
        for (partition, edges) in by_partition(&self.edges, |e| e.created_at) {
            rows += self.write("edges", &partition, &stamp, edges_batch(&edges))?;
        }
        let mut cascades: Vec<&CascadeRecord> = self.cascades.values().collect();
        cascades.sort_by(|a, b| a.cascade_id.cmp(&b.cascade_id));
        for (partition, cascades) in by_partition(&cascades, |c| c.last_seen) {
            let cascades: Vec<&CascadeRecord> = cascades.into_iter().copied().collect();
            rows += self.write("cascades", &partition, &stamp, cascades_batch(&cascades, now))?;
        }
        for (partition, merges) in by_partition(&self.merges, |m| m.merged_at) {
            rows += self.write("cascade_merges", &partition, &stamp, merges_batch(&merges))?;
        }
        for (partition, alerts) in by_partition(&self.alerts, |(a, _)| a.event_time) {
            rows += self.write("alerts", &partition, &stamp, alerts_batch(&alerts))?;
        }
        self.posts.clear();
        self.edges.clear();
        self.merges.clear();
        self.alerts.clear();
        self.cascades.clear();
        self.flushes += 1;
        Ok(rows)
    }

    fn write(
        &self,
        dataset: &'static str,
        partition: &str,
        stamp: &str,
        batch: RecordBatch,
    ) -> Result<usize, SinkError> {
        let dir = self.dir.join(dataset).join(partition);
        fs::create_dir_all(&dir).map_err(|source| SinkError::Io { path: dir.clone(), source })?;
        write_file(dataset, &dir, &format!("part-{stamp}.parquet"), &batch)?;
        Ok(batch.num_rows())
    }
}

/// Writes `batch` as `dir/name` atomically: a hidden temporary file, fsynced, renamed into place,
/// and the directory fsynced.
pub fn write_file(dataset: &'static str, dir: &Path, name: &str, batch: &RecordBatch) -> Result<(), SinkError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = dir.join(name);
    let encode = |e: parquet::errors::ParquetError| SinkError::Encode { dataset, message: e.to_string() };
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let properties = writer_properties(dataset, batch.num_rows(), None, Vec::new());
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(encode)?;
    writer.write(batch).map_err(encode)?;
    let file = writer.into_inner().map_err(encode)?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, &done).map_err(io_error(&done))?;
    sync_dir(dir)
}

/// Turns an OS error on `path` into a [`SinkError::Io`], for `map_err`.
pub fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + use<> {
    let path = path.to_owned();
    move |source| SinkError::Io { path, source }
}

/// Fsyncs a directory, so that the renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// Snappy, the schema version (and `metadata`), and bloom filters sized to a row group of at most
/// `rows` rows (a filter sized for the default million distinct values would be larger than a
/// checkpoint's whole file).
pub fn writer_properties(
    dataset: &str,
    rows: usize,
    max_row_group_rows: Option<usize>,
    metadata: Vec<KeyValue>,
) -> WriterProperties {
    let group_rows = max_row_group_rows.unwrap_or(rows).clamp(1, rows.max(1));
    let mut key_values = vec![KeyValue::new(SCHEMA_VERSION_KEY.to_owned(), SCHEMA_VERSION.to_string())];
    key_values.extend(metadata);
    let mut properties =
        WriterProperties::builder().set_compression(Compression::SNAPPY).set_key_value_metadata(Some(key_values));
    if let Some(max) = max_row_group_rows {
        properties = properties.set_max_row_group_row_count(Some(max));
    }
    for column in bloom_filter_columns(dataset) {
        let path = ColumnPath::from(*column);
        properties = properties
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_max_ndv(path.clone(), group_rows as u64)
            .set_column_bloom_filter_fpp(path, 0.01);
    }
    properties.build()
}

/// Groups rows by the partition of their event time, keeping their order within each.
fn by_partition<T>(rows: &[T], time: impl Fn(&T) -> DateTime<Utc>) -> BTreeMap<String, Vec<&T>> {
    let mut groups: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for row in rows {
        groups.entry(partition_of(time(row))).or_default().push(row);
    }
    groups
}

/// A short id for this process's files: its process id and start time, hashed.
pub fn writer_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{}-{nanos}-{:?}", std::process::id(), std::thread::current().id());
    format!("{:08x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) as u32)
}

/// A dataset's schema, as the sink writes it.
pub fn dataset_schema(dataset: &str) -> SchemaRef {
    match dataset {
        "posts" => posts_batch(&[]).schema(),
        "edges" => edges_batch(&[]).schema(),
        "cascades" => cascades_batch(&[], Utc::now()).schema(),
        "cascade_merges" => merges_batch(&[]).schema(),
        "reviews" => crate::explorer::reviews::reviews_batch(&[]).schema(),
        _ => alerts_batch(&[]).schema(),
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

fn optional_timestamps(values: impl Iterator<Item = Option<DateTime<Utc>>>) -> ArrayRef {
    Arc::new(
        values.map(|t| t.map(|t| t.timestamp_millis())).collect::<TimestampMillisecondArray>().with_timezone("UTC"),
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
pub fn posts_batch(rows: &[&PostRow]) -> RecordBatch {
    let now = Utc::now();
    let posts: Vec<&PostRecord> = rows.iter().map(|(post, _, _)| post).collect();
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
            Field::new("embedding", embedding_type(), true),
            Field::new("embedding_tokens", DataType::UInt32, true),
            Field::new("arrival", DataType::UInt64, true),
            Field::new("author_created_at", timestamp_type(), true),
            Field::new("author_followers", DataType::UInt64, true),
            Field::new("author_declared_automated", DataType::Boolean, true),
            Field::new("urls", string_list_type(), true),
            Field::new("mentions", string_list_type(), true),
            Field::new("repost_of", DataType::Utf8, true),
            Field::new("quote_of", DataType::Utf8, true),
            Field::new("reply_to", DataType::Utf8, true),
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
            embeddings(rows.iter().map(|(_, embedding, _)| embedding.as_deref())),
            Arc::new(
                rows.iter().map(|(_, embedding, _)| embedding.as_ref().map(|e| e.tokens)).collect::<UInt32Array>(),
            ),
            Arc::new(rows.iter().map(|(_, _, arrival)| Some(*arrival)).collect::<UInt64Array>()),
            optional_timestamps(posts.iter().map(|p| p.input.author_created_at)),
            Arc::new(posts.iter().map(|p| p.input.author_followers).collect::<UInt64Array>()),
            Arc::new(posts.iter().map(|p| p.input.author_declared_automated).collect::<BooleanArray>()),
            string_lists(posts.iter().map(|p| p.input.urls.as_slice())),
            string_lists(posts.iter().map(|p| p.input.mentions.as_slice())),
            optional_strings(posts.iter().map(|p| p.input.repost_of.as_deref())),
            optional_strings(posts.iter().map(|p| p.input.quote_of.as_deref())),
            optional_strings(posts.iter().map(|p| p.input.reply_to.as_deref())),
        ],
    )
}

/// `List<Utf8>`, for the urls and mentions of a post.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
}

fn string_lists<'a>(values: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut lists = ListBuilder::new(StringBuilder::new()).with_field(Field::new("item", DataType::Utf8, false));
    for list in values {
        for value in list {
            lists.values().append_value(value);
        }
        lists.append(true);
    }
    Arc::new(lists.finish())
}

/// `List<List<Float32>>`: one unit vector per chunk of the text.
pub fn embedding_type() -> DataType {
    let vector = DataType::List(Arc::new(Field::new("item", DataType::Float32, false)));
    DataType::List(Arc::new(Field::new("item", vector, false)))
}

fn embeddings<'a>(values: impl Iterator<Item = Option<&'a TextEmbedding>>) -> ArrayRef {
    let vector = ListBuilder::new(Float32Builder::new()).with_field(Field::new("item", DataType::Float32, false));
    let mut chunks = ListBuilder::new(vector).with_field(Field::new(
        "item",
        DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
        false,
    ));
    for embedding in values {
        match embedding {
            Some(embedding) => {
                for chunk in embedding.vectors.chunks(embedding.dimension.max(1)) {
                    chunks.values().values().append_slice(chunk);
                    chunks.values().append(true);
                }
                chunks.append(true);
            }
            None => chunks.append(false),
        }
    }
    Arc::new(chunks.finish())
}

/// The `edges` dataset's rows.
pub fn edges_batch(edges: &[&EdgeRecord]) -> RecordBatch {
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
            Field::new("lead_cosine", DataType::Float32, true),
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
            Arc::new(edges.iter().map(|e| e.semantic.map(|s| s.lead_cosine)).collect::<Float32Array>()),
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
            Field::new("automated_summary_depth", DataType::UInt32, true),
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
            Arc::new(UInt32Array::from_iter_values(cascades.iter().map(|c| c.automated_summary_depth))),
            timestamps(cascades.iter().map(|c| c.first_seen)),
            timestamps(cascades.iter().map(|c| c.last_seen)),
            timestamps(cascades.iter().map(|_| updated_at)),
        ],
    )
}

/// The `alerts` dataset's rows: every alert event with its wall-clock emission time.
pub fn alerts_batch(alerts: &[&(AlertEvent, DateTime<Utc>)]) -> RecordBatch {
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
            Field::new("shadow", DataType::Boolean, true),
            Field::new("held", DataType::Boolean, true),
            Field::new("starts", DataType::Boolean, true),
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
            Arc::new(BooleanArray::from_iter(alerts.iter().map(|(a, _)| Some(a.shadow)))),
            Arc::new(BooleanArray::from_iter(alerts.iter().map(|(a, _)| Some(a.held)))),
            Arc::new(BooleanArray::from_iter(alerts.iter().map(|(a, _)| Some(a.starts)))),
        ],
    )
}

/// The `cascade_merges` dataset's rows.
pub fn merges_batch(merges: &[&MergeRecord]) -> RecordBatch {
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
    use arrow_array::{Array, ListArray};
    use echotrace_core::detector::{Detector, DetectorConfig};
    use echotrace_core::post::Post;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn post(id: &str, at: &str, text: &str, repost_of: Option<&str>) -> Post {
        let repost = repost_of.map(|r| format!(",\"repost_of\":\"{r}\"")).unwrap_or_default();
        Post::from_json(
            format!(r#"{{"id":"{id}","platform":"x","author":{{"id":"a","handle":"a"}},"created_at":"{at}","text":"{text}"{repost}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn first_batch(path: &Path) -> RecordBatch {
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                found.extend(files(&entry.path()));
            } else {
                found.push(entry.path());
            }
        }
        found.sort();
        found
    }

    #[test]
    fn flush_writes_complete_files_into_event_hour_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = ParquetSink::new(dir.path()).unwrap();
        let mut detector = Detector::new(DetectorConfig::default());
        sink.push(detector.process(post("x:1", "2026-11-01T09:59:00Z", "an original post", None)).unwrap(), None);
        let embedding = TextEmbedding { vectors: vec![0.6, 0.8, 1.0, 0.0], dimension: 2, tokens: 7 };
        let repost = detector.process(post("x:2", "2026-11-01T10:01:00Z", "", Some("x:1"))).unwrap();
        sink.push(repost, Some(Arc::new(embedding)));
        assert_eq!(sink.flush().unwrap(), 2 + 1 + 1);
        assert_eq!(sink.flush().unwrap(), 0, "nothing buffered, nothing written");

        let posts = files(&dir.path().join("posts"));
        assert_eq!(posts.len(), 2, "one file per hour: {posts:?}");
        let relative: Vec<String> =
            posts.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert!(relative[0].starts_with("posts/date=2026-11-01/hour=09/part-"), "{relative:?}");
        assert!(relative[1].starts_with("posts/date=2026-11-01/hour=10/part-"), "{relative:?}");
        let cascades = files(&dir.path().join("cascades"));
        assert_eq!(cascades.len(), 1, "the cascade's row goes to the hour of its last post");
        assert!(cascades[0].to_string_lossy().contains("hour=10"));

        let metadata = SerializedFileReader::new(File::open(&posts[1]).unwrap()).unwrap();
        let key_values = metadata.metadata().file_metadata().key_value_metadata().unwrap();
        assert!(key_values.iter().any(|kv| kv.key == SCHEMA_VERSION_KEY && kv.value.as_deref() == Some("2")));
        let row_group = metadata.metadata().row_group(0);
        let has_bloom = |name: &str| {
            row_group.columns().iter().any(|c| c.column_path().string() == name && c.bloom_filter_offset().is_some())
        };
        assert!(has_bloom("post_id") && has_bloom("cascade_id"));
        assert!(!has_bloom("text"));

        let batch = first_batch(&posts[1]);
        assert_eq!(batch.num_rows(), 1);
        let parents = batch.column_by_name("parent_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(parents.value(0), "x:1");
        let chunks = batch.column_by_name("embedding").unwrap().as_any().downcast_ref::<ListArray>().unwrap();
        let vectors = chunks.value(0);
        let vectors = vectors.as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(vectors.len(), 2, "one vector per chunk");
        let second = vectors.value(1);
        assert_eq!(second.as_any().downcast_ref::<Float32Array>().unwrap().values(), &[1.0, 0.0]);
    }

    #[test]
    fn posts_not_embedded_have_no_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = ParquetSink::new(dir.path()).unwrap().with_embeddings(false);
        let mut detector = Detector::new(DetectorConfig::default());
        let embedding = TextEmbedding { vectors: vec![1.0, 0.0], dimension: 2, tokens: 3 };
        let detection = detector.process(post("x:1", "2026-11-01T09:00:00Z", "a post", None)).unwrap();
        sink.push(detection, Some(Arc::new(embedding)));
        sink.flush().unwrap();
        let posts = files(&dir.path().join("posts"));
        let batch = first_batch(&posts[0]);
        assert!(batch.column_by_name("embedding").unwrap().is_null(0), "store_embeddings off");
    }
}
